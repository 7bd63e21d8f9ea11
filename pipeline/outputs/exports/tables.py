"""The table formats, one row per persona: CSV, JSON, JSONL and Parquet.

In CSV, lists (tags, image keys) are JSON arrays, booleans ``true``/``false``, missing values empty; the file
starts with a UTF-8 BOM (Excel) and any text cell starting with ``= + - @``, a tab or a carriage return is
prefixed with ``'`` so spreadsheets never evaluate it.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from pipeline.outputs.exports.records import (
    EXPORT_COLUMNS,
    FLOAT_COLUMNS,
    INT_COLUMNS,
    LIST_COLUMNS,
    ExportContext,
    Record,
    Rows,
    dumps,
)

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
PARQUET_ROW_GROUP = 5_000  # rows per row group of the Parquet table (about 10 MB buffered)
ROW_GROUP_BYTES = 4 << 20  # image data buffered for one row group (each costs about 4x this while written)


def neutralise_cell(text: str) -> str:
    """A text cell a spreadsheet will not evaluate as a formula."""
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


def csv_cell(value: Any) -> str:
    """One CSV cell: see the module's description."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list | dict):
        return dumps(value)
    return neutralise_cell(str(value))


def write_csv(rows: Rows, path: Path, ctx: ExportContext) -> None:
    with open(path, "w", encoding="utf-8-sig", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(EXPORT_COLUMNS)
        for record, _row in rows:
            writer.writerow([csv_cell(record[name]) for name in EXPORT_COLUMNS])
            ctx.count(record)


def write_json(rows: Rows, path: Path, ctx: ExportContext) -> None:
    """One JSON array, a persona per line."""
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write("[")
        for record, _row in rows:
            fh.write(",\n" if ctx.counts["personas"] else "\n")
            fh.write(dumps(record))
            ctx.count(record)
        fh.write("\n]\n" if ctx.counts["personas"] else "]\n")


def write_jsonl(rows: Rows, path: Path, ctx: ExportContext) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        for record, _row in rows:
            fh.write(dumps(record) + "\n")
            ctx.count(record)


def parquet_schema() -> Any:
    """The typed Arrow schema of ``EXPORT_COLUMNS``."""
    import pyarrow as pa  # imported when a Parquet file is written, not when a page loads the exports

    fields = []
    for name in EXPORT_COLUMNS:
        if name in INT_COLUMNS:
            kind = pa.int64()
        elif name in FLOAT_COLUMNS:
            kind = pa.float64()
        elif name in LIST_COLUMNS:
            kind = pa.list_(pa.string())
        elif name == "favorite":
            kind = pa.bool_()
        else:
            kind = pa.string()
        fields.append(pa.field(name, kind))
    return pa.schema(fields)


def write_parquet_rows(
    path: Path,
    schema: Any,
    rows: Iterable[dict[str, Any]],
    batch: int,
    *,
    row_bytes: Callable[[dict[str, Any]], int] | None = None,
    max_bytes: int = ROW_GROUP_BYTES,
) -> None:
    """Rows into a Parquet file in row groups of ``batch`` rows, or fewer once the rows buffered weigh
    ``max_bytes`` by ``row_bytes``. A row group is held whole until it is written (the rows, their Arrow copy,
    the encoded pages: about four times its size), so rows holding images are weighed. An empty file still
    gets the schema."""
    import pyarrow as pa  # see parquet_schema
    import pyarrow.parquet as pq

    with pq.ParquetWriter(str(path), schema) as writer:
        buffer: list[dict[str, Any]] = []
        weight = written = 0
        for row in rows:
            buffer.append(row)
            weight += row_bytes(row) if row_bytes is not None else 0
            if len(buffer) >= batch or weight >= max_bytes:
                writer.write_table(pa.Table.from_pylist(buffer, schema=schema))
                written += len(buffer)
                buffer, weight = [], 0
        if buffer or not written:
            writer.write_table(pa.Table.from_pylist(buffer, schema=schema))


def write_parquet(rows: Rows, path: Path, ctx: ExportContext) -> None:
    def records() -> Iterator[Record]:
        for record, _row in rows:
            ctx.count(record)
            yield record

    write_parquet_rows(path, parquet_schema(), records(), PARQUET_ROW_GROUP)
