"""The formats that carry the images: a ZIP of one folder per persona, the Hugging Face ``imagefolder`` layout
(as a folder or inside a ZIP) and Parquet with the images embedded.

ZIP folders are ``<batch>-<slot>_<first-last>`` (prefixed with the task id when the view spans several tasks),
made unique; each holds ``persona.json`` and the images. ``manifest.json`` comes last: the export's filter,
counts, tasks and missing images. Entries carry a fixed timestamp, so the same data gives the same bytes but for
the manifest's ``exported_at``.
"""

from __future__ import annotations

import io
import json
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import closing
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from pipeline import __version__
from pipeline.core.keys import slugify
from pipeline.outputs.exports.card import dataset_card
from pipeline.outputs.exports.images import Read, persona_images, read_images
from pipeline.outputs.exports.records import (
    CHUNK_ROWS,
    EXPORT_COLUMNS,
    ExportContext,
    Record,
    Row,
    Rows,
    dumps,
    image_identity,
    pretty_json,
    task_entries,
)
from pipeline.outputs.exports.tables import parquet_schema, write_parquet_rows

ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed entry timestamps: the same data gives the same bytes
COPY_CHUNK_BYTES = 1 << 20


class ZipSink:
    """Entries added one after another to a ZIP file (never the whole archive in memory). Text is deflated;
    images are stored as they are (JPEG and PNG are compressed already)."""

    def __init__(self, path: Path):
        self.zf = zipfile.ZipFile(path, "w", allowZip64=True)

    def __enter__(self) -> ZipSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.zf.close()

    @staticmethod
    def _info(name: str, compress: bool, size: int) -> zipfile.ZipInfo:
        info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
        info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
        info.external_attr = 0o644 << 16
        info.file_size = size  # known up front: zipfile then picks ZIP64 headers only when they are needed
        return info

    def add_bytes(self, name: str, data: bytes, *, compress: bool) -> None:
        self.zf.writestr(self._info(name, compress, len(data)), data)

    def add_stream(self, name: str, src: IO[bytes], *, compress: bool) -> None:
        size = src.seek(0, io.SEEK_END)
        src.seek(0)
        with self.zf.open(self._info(name, compress, size), "w") as dst:
            shutil.copyfileobj(src, dst, COPY_CHUNK_BYTES)


class DirSink:
    """The same entries as files below a folder (an ``hf`` export written as a folder)."""

    def __init__(self, root: Path):
        self.root = root

    def add_bytes(self, name: str, data: bytes, *, compress: bool) -> None:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def add_stream(self, name: str, src: IO[bytes], *, compress: bool) -> None:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        src.seek(0)
        with open(path, "wb") as dst:
            shutil.copyfileobj(src, dst, COPY_CHUNK_BYTES)


Sink = ZipSink | DirSink


def folder_name(record: Record, used: set[str], multi_task: bool) -> str:
    """``<batch>-<slot>_<slug(first last)>`` (prefixed with the task id when the view spans several tasks),
    made unique with ``-2``, ``-3``… (compared case-insensitively, for case-insensitive file systems)."""
    slot = record["slot"]
    position = f"{record['batch_number']:03d}-" + (f"{slot:02d}" if slot is not None else f"id{record['persona_id']}")
    slug = slugify(f"{record['firstname'] or ''} {record['lastname'] or ''}")
    base = f"{position}_{slug}"
    if multi_task:
        base = f"{slugify(str(record['task_id']), 24)}_{base}"
    name, n = base, 1
    while name.lower() in used:
        n += 1
        name = f"{base}-{n}"
    used.add(name.lower())
    return name


def write_zip(rows: Rows, path: Path, ctx: ExportContext) -> None:
    used: set[str] = set()
    with ZipSink(path) as sink, closing(read_images(rows, ctx.storage)) as personas:
        for record, row, reads in personas:
            ctx.count(record)
            folder = folder_name(record, used, ctx.multi_task)
            images = persona_images(reads, record, folder, ctx)
            persona = {
                **record,
                "files": {
                    "base": next((im.name for im in images if im.role == "base"), None),
                    "images": [im.name for im in images if im.role == "variation"],
                },
                "image_meta": row["image_meta"],
            }
            sink.add_bytes(f"{folder}/persona.json", pretty_json(persona), compress=True)
            for image in images:
                sink.add_bytes(f"{folder}/{image.name}", image.data, compress=False)
        sink.add_bytes("manifest.json", pretty_json(_manifest(ctx)), compress=True)


def _manifest(ctx: ExportContext) -> dict[str, Any]:
    return {
        "format": "zip",
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "app_version": __version__,
        "filter": ctx.filter_params,
        "counts": {**ctx.counts, "by_status": dict(sorted(ctx.by_status.items()))},
        "columns": list(EXPORT_COLUMNS),
        "tasks": task_entries(ctx),
        "missing": ctx.missing,
    }


def write_hf_zip(rows: Rows, path: Path, ctx: ExportContext) -> None:
    with ZipSink(path) as sink:
        write_hf(rows, sink, ctx)


def write_hf(rows: Rows, sink: Sink, ctx: ExportContext) -> None:
    """``train/<folder>/<image>`` for every image, ``train/metadata.jsonl`` (one line per image with its persona's
    fields) and the dataset card ``README.md``."""
    used: set[str] = set()
    with tempfile.TemporaryFile() as metadata, closing(read_images(rows, ctx.storage)) as personas:
        for record, row, reads in personas:
            ctx.count(record)
            folder = folder_name(record, used, ctx.multi_task)
            fields = {k: v for k, v in record.items() if k not in ("base_image", "images")}
            for image in persona_images(reads, record, folder, ctx):
                file_name = f"{folder}/{image.name}"
                sink.add_bytes(f"train/{file_name}", image.data, compress=False)
                line = {
                    "file_name": file_name,
                    "image_role": image.role,
                    "image_index": image.index,
                    "source_key": image.uri,
                    **image_identity(row, image.role, image.index),
                    **fields,
                }
                metadata.write((dumps(line) + "\n").encode())
        sink.add_stream("train/metadata.jsonl", metadata, compress=True)
    sink.add_bytes("README.md", dataset_card(ctx).encode(), compress=True)


def _hf_features(schema: Any) -> dict[str, Any]:
    """The ``datasets`` feature description of a schema: Image for the image column, Value/Sequence otherwise."""
    import pyarrow as pa  # imported when a Parquet file is written, not when a page loads the exports

    features: dict[str, Any] = {}
    for f in schema:
        if f.name == "image":
            features[f.name] = {"_type": "Image"}
        elif pa.types.is_list(f.type):
            features[f.name] = {"feature": {"dtype": "string", "_type": "Value"}, "_type": "Sequence"}
        else:
            dtype = {"int64": "int64", "bool": "bool", "double": "float64"}.get(str(f.type), "string")
            features[f.name] = {"dtype": dtype, "_type": "Value"}
    return features


def write_parquet_images(rows: Rows, path: Path, ctx: ExportContext) -> None:
    """One row per image with the image's bytes embedded, the Hugging Face ``Image`` feature declared in the
    schema metadata (``datasets.load_dataset("parquet", ...)`` decodes it), and the persona's fields beside it."""
    import pyarrow as pa  # see _hf_features

    schema = pa.schema(
        [
            pa.field("image", pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])),
            pa.field("image_role", pa.string()),
            pa.field("image_index", pa.int64()),
            pa.field("image_faces", pa.int64()),
            pa.field("image_face_distance", pa.float64()),
            *parquet_schema(),
        ]
    )
    schema = schema.with_metadata({"huggingface": json.dumps({"info": {"features": _hf_features(schema)}})})

    def image_rows(personas: Iterator[tuple[Record, Row, list[Read]]]) -> Iterator[dict[str, Any]]:
        for record, row, reads in personas:
            ctx.count(record)
            for image in persona_images(reads, record, str(record["persona_id"]), ctx):
                yield {
                    "image": {"bytes": image.data, "path": f"{record['persona_id']}/{image.name}"},
                    "image_role": image.role,
                    "image_index": image.index,
                    **image_identity(row, image.role, image.index),
                    **record,
                }

    with closing(read_images(rows, ctx.storage)) as personas:
        write_parquet_rows(path, schema, image_rows(personas), CHUNK_ROWS // 4,
                           row_bytes=lambda row: len(row["image"]["bytes"]))
