"""An export from start to finish: the format and the target checked, the rows streamed from the database to the
format's writer, and the output built beside ``out`` then renamed into place.

- Rows are streamed from the database ``CHUNK_ROWS`` at a time (a server-side cursor on PostgreSQL); only
  Parquet buffers one row group before writing it, and the image formats hold a few personas' images at most.
- Every output is built next to ``out`` under a hidden ``.<name>.*.part`` name and renamed into place only when
  complete: a failed export leaves nothing at ``out`` (an earlier file there stays untouched).
- Outputs are deterministic: the same data gives byte-identical files; the one exception is ``exported_at`` in
  the ZIP's ``manifest.json``.
- ``hf`` writes a folder at ``out``, or the same layout inside a ZIP file when ``out`` ends with ``.zip`` (what
  the gallery offers as a download). An existing folder at ``out`` is replaced only when it is an earlier ``hf``
  export.
- Files are created with mode 0600: they hold the dataset's personal-looking data.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import db.queries as q
from db.models import User
from db.session import Database
from pipeline.core.errors import ValidationError
from pipeline.outputs.browse import GalleryFilter, resolve_criteria
from pipeline.outputs.exports.archives import DirSink, write_hf, write_hf_zip, write_parquet_images, write_zip
from pipeline.outputs.exports.records import CHUNK_ROWS, FORMATS, IMAGE_FORMATS, ExportContext, Rows, to_record
from pipeline.outputs.exports.tables import write_csv, write_json, write_jsonl, write_parquet
from pipeline.storage import Storage

log = logging.getLogger(__name__)

WRITERS: dict[str, Callable[[Rows, Path, ExportContext], None]] = {
    "csv": write_csv,
    "json": write_json,
    "jsonl": write_jsonl,
    "parquet": write_parquet,
    "parquet-images": write_parquet_images,
    "zip": write_zip,
    "hf": write_hf_zip,  # a folder when ``out`` does not end with .zip: see _export
}


def export_view(db: Database, storage: Storage, user: User, flt: GalleryFilter, fmt: str, out: Path) -> Path:
    """Write the gallery's current filtered view (what ``query_page`` pages through) to ``out``."""
    fmt = _check_format(fmt)
    criteria = resolve_criteria(db, user, flt)
    return _export(db, storage, criteria, fmt, Path(out), flt.to_query_params())


def export_task(db: Database, storage: Storage, task_id: str, fmt: str, out: Path, user: User | None = None) -> Path:
    """Every persona of one task (the CLI; ``user=None`` skips the visibility check)."""
    fmt = _check_format(fmt)
    flt = GalleryFilter(task_ids=[task_id])
    criteria = resolve_criteria(db, user, flt)
    return _export(db, storage, criteria, fmt, Path(out), flt.to_query_params())


def _export(
    db: Database, storage: Storage, criteria: q.PersonaCriteria, fmt: str, out: Path, filter_params: dict[str, str]
) -> Path:
    _check_out(out, fmt)
    with db.session() as session:
        tasks = q.gallery_tasks_info(session, criteria)
        usage = q.usage_by_task_id(session, [t["task_id"] for t in tasks])
        for t in tasks:
            t["provider_usage"] = [u.as_dict() for u in usage.get(t["task_id"], [])]
        ctx = ExportContext(storage, fmt, tasks, filter_params, multi_task=len(tasks) > 1)
        rows = q.gallery_export_rows(session, criteria, chunk=CHUNK_ROWS, with_meta=fmt in IMAGE_FORMATS)
        records = ((to_record(row), row) for row in rows)
        if fmt == "hf" and not _is_hf_zip(fmt, out):
            with _atomic_dir(out) as tmp_dir:
                write_hf(records, DirSink(tmp_dir), ctx)
        else:
            with _atomic_file(out) as tmp:
                WRITERS[fmt](records, tmp, ctx)
    log.info(
        "exported %d personas as %s (%d images, %d missing)",
        ctx.counts["personas"],
        fmt,
        ctx.counts["images"],
        ctx.counts["missing"],
    )
    return out


def _check_format(fmt: str) -> str:
    name = str(fmt or "").strip().lower()
    if name not in FORMATS:
        raise ValidationError(f"unknown export format {str(fmt)[:20]!r}: use one of {', '.join(FORMATS)}")
    return name


def _is_hf_zip(fmt: str, out: Path) -> bool:
    return fmt == "hf" and out.suffix.lower() == ".zip"


def _looks_like_hf_export(folder: Path) -> bool:
    names = {p.name for p in folder.iterdir()}
    return names <= {"README.md", "train"} and (folder / "train" / "metadata.jsonl").is_file()


def _check_out(out: Path, fmt: str) -> None:
    if fmt == "hf" and not _is_hf_zip(fmt, out):
        if out.exists() and not out.is_dir():
            raise ValidationError(f"{out} exists and is a file: the hf format writes a folder (or give a .zip path)")
        if out.is_dir() and any(out.iterdir()) and not _looks_like_hf_export(out):
            raise ValidationError(f"{out} is a folder that is not an earlier hf export: give a new path")
    elif out.is_dir():
        raise ValidationError(f"{out} is a folder: give a file path")


@contextlib.contextmanager
def _atomic_file(out: Path) -> Iterator[Path]:
    """A temporary file beside ``out`` (mode 0600), renamed onto it on success and removed on failure."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".part")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _atomic_dir(out: Path) -> Iterator[Path]:
    """A temporary folder beside ``out`` that replaces it on success (an old export is swapped out)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".part"))
    try:
        yield tmp
        if out.exists():
            trash = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".old"))
            os.replace(out, trash / "old")
            try:
                os.replace(tmp, out)
            except BaseException:
                os.replace(trash / "old", out)  # put the earlier export back
                shutil.rmtree(trash, ignore_errors=True)
                raise
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
