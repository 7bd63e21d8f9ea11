"""Dataset exports of a gallery view or of a whole task: CSV, JSON, JSONL, Parquet, ZIP, Hugging Face imagefolder.

- Rows are streamed from the database 500 at a time (a server-side cursor on PostgreSQL); only Parquet buffers
  one row group (``PARQUET_ROW_GROUP`` rows; 125 with embedded images) before writing it. Images are read a few
  personas ahead on reader threads (one task per persona) while the current persona is written when they come
  from S3 or legacy URLs, and one persona at a time when they are local files: at most ``IMAGE_READERS + 1``
  personas' images are in memory.
- Every output is built next to ``out`` under a hidden ``.<name>.*.part`` name and renamed into place only when
  complete: a failed export leaves nothing at ``out`` (an earlier file there stays untouched).
- Outputs are deterministic: the same data gives byte-identical files; the one exception is ``exported_at`` in
  the ZIP's ``manifest.json`` (written last, so every other entry keeps its bytes and offsets).
- ``hf`` writes a Hugging Face ``imagefolder`` dataset: a folder at ``out`` (``README.md`` dataset card,
  ``train/metadata.jsonl`` and the images below ``train/``), or the same layout inside a ZIP file when ``out``
  ends with ``.zip`` (what the gallery offers as a download). An existing folder at ``out`` is replaced only when
  it is an earlier ``hf`` export.
- Files are created with mode 0600: they hold the dataset's personal-looking data.

Columns: ``EXPORT_COLUMNS``. In CSV, lists (tags, image keys) are JSON arrays, booleans ``true``/``false``,
missing values empty; the file starts with a UTF-8 BOM (Excel) and any text cell starting with ``= + - @``, a tab
or a carriage return is prefixed with ``'`` so spreadsheets never evaluate it.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import re
import shutil
import tempfile
import zipfile
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import IO, Any

import db.queries as q
from db.models import User
from db.session import Database
from pipeline import __version__
from pipeline.core.errors import PipelineError, ValidationError
from pipeline.core.keys import extension_for, slugify
from pipeline.outputs.browse import GalleryFilter, resolve_criteria
from pipeline.storage import Storage, is_legacy_url, read_image

log = logging.getLogger(__name__)

__all__ = ["EXPORT_COLUMNS", "FORMATS", "export_task", "export_view", "neutralise_cell"]

FORMATS = ("csv", "json", "jsonl", "parquet", "parquet-images", "zip", "hf")
IMAGE_FORMATS = frozenset({"parquet-images", "zip", "hf"})  # these read image_meta and quality whole
CHUNK_ROWS = 500
PARQUET_ROW_GROUP = 5_000  # rows per row group of the table export: ~10 MB buffered, 3x faster to write than 500
IMAGE_READERS = 8
ZIP_BUFFER = 1 << 20
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed entry timestamps: the same data gives the same bytes
# Deflate level of the JSON entries. Measured on 1,001 persona.json files (4.9 MB): level 1 packs them into
# 1.03 MB in 41 ms, the default (6) into 0.91 MB in 56 ms: 0.4% of a 27 MB archive for a quarter of the time.
ZIP_LEVEL = 1
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")

PERSONA_FIELDS: tuple[str, ...] = q.GALLERY_PERSONA_FIELDS
EXPORT_COLUMNS: tuple[str, ...] = (
    "task_id",
    "persona_id",
    "batch_number",
    "slot",
    "status",
    "error",
    *PERSONA_FIELDS,
    "language",
    "favorite",
    "tags",
    "rating",
    "image_count",
    "curation",
    "quality_flags",
    "identity_score",
    "identity_worst_distance",
    "base_faces",
    "face_leakage_distance",
    "base_image",
    "images",
)
INT_COLUMNS = frozenset({"persona_id", "batch_number", "slot", "age", "rating", "image_count", "base_faces"})
FLOAT_COLUMNS = frozenset({"identity_score", "identity_worst_distance", "face_leakage_distance"})
LIST_COLUMNS = frozenset({"tags", "images", "quality_flags"})

FIELD_DESCRIPTIONS: dict[str, str] = {
    "task_id": "random id of the generation task the persona belongs to",
    "persona_id": "the persona's row id (unique within this database)",
    "batch_number": "batch of 10 personas it was generated in (from 1)",
    "slot": "position within its batch (from 0)",
    "status": "pending (images not all done), completed or failed",
    "error": "why the persona failed, if it did",
    "firstname": "first name",
    "lastname": "last name",
    "gender": "m, f, or another value",
    "ethnicity": "ethnicity as generated",
    "age": "age in years (13-100), empty if unknown",
    "bio_facebook": "Facebook bio",
    "bio_instagram": "Instagram bio",
    "bio_x": "X (Twitter) bio",
    "bio_tiktok": "TikTok bio",
    "job_title": "job title",
    "workplace": "employer or workplace",
    "edu_establishment": "school or university",
    "edu_study": "field of study",
    "current_city": "city of residence",
    "current_state": "state or region of residence",
    "prev_city": "previous city",
    "prev_state": "previous state or region",
    "about": "a longer free-text description",
    "language": "language the bios were requested in (the task's bio language)",
    "favorite": "marked as favourite by a curator",
    "tags": "curator tags",
    "rating": "curator rating 1-5, empty if unrated",
    "image_count": "number of photo variations",
    "curation": "curator decision: keep, reject or empty",
    "quality_flags": "quality checks that flagged the persona (e.g. identity_inconsistent, no_face, "
    "duplicate_identity, face_leakage, near_duplicate_bio)",
    "identity_score": "share of the photo variations whose face is within the same-person threshold of the base "
    "face (dlib 128-d embeddings); empty when the check did not run or no face was found in the base",
    "identity_worst_distance": "largest face-embedding distance of a variation to the base (same person: below "
    "the threshold in the manifest's identity settings)",
    "base_faces": "number of faces found in the base selfie (1 expected); empty when the check did not run",
    "face_leakage_distance": "distance between the base face and the face-library photo it was made from "
    "(randomize_face_base); below the leakage threshold the persona reproduces a real person",
    "base_image": "storage key of the base selfie",
    "images": "storage keys of the photo variations",
    "file_name": "(metadata.jsonl) the image file, relative to train/",
    "image_role": "(metadata.jsonl) base (the base selfie) or variation",
    "image_index": "(metadata.jsonl) 1-based number of a variation; empty for the base image",
    "source_key": "(metadata.jsonl) storage key the image was read from",
    "image_faces": "(metadata.jsonl) faces found in this image by the identity check (1 expected)",
    "image_face_distance": "(metadata.jsonl) this variation's face-embedding distance to the base face",
}


# --- public API -------------------------------------------------------------------------------------------------


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


def neutralise_cell(text: str) -> str:
    """A text cell a spreadsheet will not evaluate as a formula."""
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


# --- plumbing ----------------------------------------------------------------------------------------------------


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
    """A temporary file beside ``out``, renamed onto it on success and removed on failure."""
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


def _record(row: dict[str, Any]) -> dict[str, Any]:
    """One export row (``EXPORT_COLUMNS`` in order) from a database row (``gallery_export_rows``)."""
    record = {name: row[name] for name in EXPORT_COLUMNS}
    record["favorite"] = bool(record["favorite"])
    for name in LIST_COLUMNS:
        record[name] = list(record[name] or [])
    return record


def _image_identity(row: dict[str, Any], role: str, index: int | None) -> dict[str, Any]:
    """The identity check's findings for one image (metadata.jsonl), empty when the check did not run."""
    identity = (row.get("quality") or {}).get("identity") or {}
    if not identity:
        return {"image_faces": None, "image_face_distance": None}
    if role == "base":
        return {"image_faces": identity.get("base_faces"), "image_face_distance": 0.0 if identity.get("score")
                is not None else None}
    i = (index or 0) - 1
    faces, distances = identity.get("faces") or [], identity.get("distances") or []
    return {"image_faces": faces[i] if 0 <= i < len(faces) else None,
            "image_face_distance": distances[i] if 0 <= i < len(distances) else None}


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot export {type(value).__name__}")


def _dumps(value: Any, *, indent: int | None = None) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent, default=_json_default)


def _pretty_json(value: Any) -> bytes:
    """Indented UTF-8 JSON with a final newline (the ZIP's files), via orjson: the standard library's indenting
    encoder is pure Python and was most of a ZIP export's time (one persona.json per persona)."""
    import orjson

    return orjson.dumps(value, default=_json_default, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)


@dataclass
class _Context:
    storage: Storage
    fmt: str
    tasks: list[dict[str, Any]]
    filter_params: dict[str, str]
    multi_task: bool
    counts: dict[str, int] = field(default_factory=lambda: {"personas": 0, "images": 0, "missing": 0})
    by_status: dict[str, int] = field(default_factory=dict)
    missing: list[dict[str, Any]] = field(default_factory=list)


def _export(
    db: Database, storage: Storage, criteria: q.PersonaCriteria, fmt: str, out: Path, filter_params: dict[str, str]
) -> Path:
    _check_out(out, fmt)
    with db.session() as session:
        tasks = q.gallery_tasks_info(session, criteria)
        ctx = _Context(storage, fmt, tasks, filter_params, multi_task=len(tasks) > 1)
        rows = q.gallery_export_rows(session, criteria, chunk=CHUNK_ROWS, with_meta=fmt in IMAGE_FORMATS)
        records = (_with_row(row) for row in rows)
        if fmt == "hf" and not _is_hf_zip(fmt, out):
            with _atomic_dir(out) as tmp_dir:
                _write_hf(records, _DirSink(tmp_dir), ctx)
        else:
            with _atomic_file(out) as tmp:
                WRITERS[fmt](records, tmp, ctx)
    log.info("exported %d personas as %s (%d images, %d missing)", ctx.counts["personas"], fmt,
             ctx.counts["images"], ctx.counts["missing"])
    return out


def _with_row(row: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    return _record(row), row


Rows = Iterable[tuple[dict[str, Any], dict[str, Any]]]


# --- tabular formats ------------------------------------------------------------------------------------------


def _csv_cell(value: Any) -> str:
    if type(value) is str:  # most cells: neutralised at once, without the isinstance chain below
        return neutralise_cell(value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list | dict):
        return _dumps(value)
    return neutralise_cell(str(value))


def _write_csv(rows: Rows, path: Path, ctx: _Context) -> None:
    cell, columns = _csv_cell, EXPORT_COLUMNS
    with open(path, "w", encoding="utf-8-sig", newline="", buffering=1 << 20) as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        for record, _row in rows:
            writer.writerow([cell(record[name]) for name in columns])
            ctx.counts["personas"] += 1


def _write_json(rows: Rows, path: Path, ctx: _Context) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write("[")
        for record, _row in rows:
            fh.write(",\n" if ctx.counts["personas"] else "\n")
            fh.write(_dumps(record))
            ctx.counts["personas"] += 1
        fh.write("\n]\n" if ctx.counts["personas"] else "]\n")


def _write_jsonl(rows: Rows, path: Path, ctx: _Context) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        for record, _row in rows:
            fh.write(_dumps(record) + "\n")
            ctx.counts["personas"] += 1


def _parquet_schema() -> Any:
    import pyarrow as pa

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


def _write_parquet_rows(path: Path, schema: Any, rows: Iterable[dict[str, Any]], batch: int) -> None:
    """Rows into a Parquet file in row groups of ``batch`` (an empty file still gets the schema)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with pq.ParquetWriter(str(path), schema) as writer:
        buffer: list[dict[str, Any]] = []
        written = 0
        for row in rows:
            buffer.append(row)
            if len(buffer) >= batch:
                writer.write_table(pa.Table.from_pylist(buffer, schema=schema))
                written += len(buffer)
                buffer = []
        if buffer or not written:
            writer.write_table(pa.Table.from_pylist(buffer, schema=schema))


def _write_parquet(rows: Rows, path: Path, ctx: _Context) -> None:
    def records() -> Iterator[dict[str, Any]]:
        for record, _row in rows:
            _count(ctx, record)
            yield record

    _write_parquet_rows(path, _parquet_schema(), records(), PARQUET_ROW_GROUP)


# --- formats with images ------------------------------------------------------------------------------------------


class _ZipSink:
    """Entries written one after another into a ZIP file (never the whole archive in memory)."""

    def __init__(self, path: Path):
        # A 1 MB write buffer: a system call per few hundred small images rather than per two or three.
        self.file = open(path, "wb", buffering=ZIP_BUFFER)  # noqa: SIM115 - closed in close()
        self.zf = zipfile.ZipFile(self.file, "w", allowZip64=True)
        self.zf.comment = b""  # marks the archive modified: close() writes the central directory of add_bytes
        # Where the next entry starts. Kept here: a buffered file's tell() is an lseek system call, two per entry.
        self.offset = self.file.tell()

    def _info(self, name: str, compress: bool) -> zipfile.ZipInfo:
        info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
        info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
        info.external_attr = 0o644 << 16
        return info

    def add_bytes(self, name: str, data: bytes, *, compress: bool) -> None:
        """The entry's bytes are all here, so its CRC and sizes are known before its header: the header is
        written once, with ``zipfile``'s own ``FileHeader``, and the entry handed to ``zipfile`` for the central
        directory. ``writestr`` writes a provisional header, then seeks back to rewrite it and forth again,
        flushing the write buffer each time: with 10,000 images that doubled the cost of writing the archive."""
        info = self._info(name, compress)
        info.file_size = len(data)
        info.CRC = zlib.crc32(data)
        if compress:
            data = zlib.compress(data, ZIP_LEVEL, -15)  # a raw deflate stream: zipfile's DEFLATED
        info.compress_size = len(data)
        header = info.FileHeader()
        info.header_offset = self.offset
        self.file.write(header)
        self.file.write(data)
        self.offset += len(header) + len(data)
        zf = self.zf
        zf.filelist.append(info)
        zf.NameToInfo[name] = info
        zf.start_dir = self.offset  # where the central directory goes: after the last entry

    def add_stream(self, name: str, src: IO[bytes], *, compress: bool) -> None:
        size = src.seek(0, io.SEEK_END)
        src.seek(0)
        info = self._info(name, compress)
        info.file_size = size
        with self.zf.open(info, "w") as dst:
            shutil.copyfileobj(src, dst, 1024 * 1024)
        self.offset = self.file.tell()

    def close(self) -> None:
        try:
            self.zf.close()
        finally:
            self.file.close()


class _DirSink:
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
            shutil.copyfileobj(src, dst, 1024 * 1024)

    def close(self) -> None:
        return None


Sink = _ZipSink | _DirSink


def _folder_name(record: dict[str, Any], used: set[str], multi_task: bool) -> str:
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


_SAFE_EXT = re.compile(r"^[a-z0-9]{1,5}$")


def _ext(data: bytes, uri: str) -> str:
    ext = extension_for(data)
    if ext != "bin":
        return ext
    tail = uri.rsplit("/", 1)[-1].split("?", 1)[0]
    guess = tail.rsplit(".", 1)[-1].lower() if "." in tail else ""
    return guess if _SAFE_EXT.match(guess) else "bin"


@dataclass
class _Image:
    name: str  # file name inside the persona's folder
    role: str  # base / variation
    index: int | None
    uri: str
    data: bytes


Wanted = list[tuple[str, int | None, str]]
Fetched = list[bytes | PipelineError]
Pending = tuple[dict[str, Any], dict[str, Any], Wanted, Future[Fetched] | None]  # record, row, images, reads


def _wanted(record: dict[str, Any]) -> Wanted:
    """(role, variation number, uri) of each image of a persona, base first."""
    wanted: Wanted = []
    if record["base_image"]:
        wanted.append(("base", None, str(record["base_image"])))
    wanted.extend([("variation", i, uri) for i, uri in enumerate(record["images"], start=1)])
    return wanted


def _fetch_all(get: Callable[[str], bytes], wanted: Wanted) -> Fetched:
    out: Fetched = []
    for _role, _index, uri in wanted:
        try:
            out.append(get(uri))
        except PipelineError as exc:
            out.append(exc)
    return out


class _ReadAhead:
    """The rows, in order, with each persona's images. From a remote storage (or legacy URLs) the images of the
    next ``IMAGE_READERS`` personas are read on reader threads while the current one is written, one pool task
    per persona: at most ``IMAGE_READERS + 1`` personas' images are in memory at once. Local files are read in
    the writing thread, when their persona comes up: threads doing short reads only hand the GIL around (8
    reader threads made a 9,000-image ZIP export 6× slower than reading in turn)."""

    def __init__(self, rows: Rows, storage: Storage):
        self.rows, self.storage = rows, storage
        self._pool: ThreadPoolExecutor | None = None
        self._current: Future[Fetched] | Fetched = []
        self.wanted: Wanted = []  # the images of the persona last yielded (``_wanted``)

    def __enter__(self) -> _ReadAhead:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def _read(self, wanted: Wanted) -> Future[Fetched] | None:
        """``None``: local files, read when the persona comes up."""
        if not self.storage.remote and not any(is_legacy_url(uri) for _role, _index, uri in wanted):
            return None
        if self._pool is None:
            self._pool = ThreadPoolExecutor(IMAGE_READERS, thread_name_prefix="export-read")
        return self._pool.submit(_fetch_all, partial(read_image, self.storage), wanted)

    def __iter__(self) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        window: deque[Pending] = deque()
        try:
            for record, row in self.rows:
                wanted = _wanted(record)
                window.append((record, row, wanted, self._read(wanted)))
                if len(window) > IMAGE_READERS:
                    yield self._next(window)
            while window:
                yield self._next(window)
        finally:
            for _record, _row, _wanted_images, pending in window:
                if pending is not None:
                    pending.cancel()

    def _next(self, window: deque[Pending]) -> tuple[dict[str, Any], dict[str, Any]]:
        record, row, self.wanted, pending = window.popleft()
        # Local files: no legacy URL among them (``_read``), so straight from the storage.
        self._current = pending if pending is not None else _fetch_all(self.storage.get, self.wanted)
        return record, row

    def fetched(self) -> Fetched:
        """The images of the persona last yielded, in ``wanted`` order."""
        current = self._current
        return current.result() if isinstance(current, Future) else current


def _persona_images(reader: _ReadAhead, record: dict[str, Any], folder: str, ctx: _Context) -> list[_Image]:
    """The persona's images (read ahead by ``reader``, order kept); missing ones go to ``ctx.missing``."""
    images: list[_Image] = []
    for (role, index, uri), data in zip(reader.wanted, reader.fetched(), strict=True):
        stem = "base" if index is None else f"img{index:02d}"
        if isinstance(data, PipelineError):
            ctx.missing.append(
                {"persona_id": record["persona_id"], "folder": folder, "file": stem, "uri": uri, "error": str(data)}
            )
            ctx.counts["missing"] += 1
            continue
        images.append(_Image(f"{stem}.{_ext(data, uri)}", role, index, uri, data))
        ctx.counts["images"] += 1
    return images


def _count(ctx: _Context, record: dict[str, Any]) -> None:
    ctx.counts["personas"] += 1
    status = str(record["status"])
    ctx.by_status[status] = ctx.by_status.get(status, 0) + 1


def _task_entries(ctx: _Context) -> list[dict[str, Any]]:
    return [
        {
            "task_id": t["task_id"],
            "description": t["persona_description"],
            "language": t["bio_language"],
            "number_to_generate": t["number_to_generate"],
            "images_per_persona": t["images_per_persona"],
            "seed": t["seed"],
            "status": t["status"],
            "created_at": t["created_at"],
            "started_at": t["started_at"],
            "completed_at": t["completed_at"],
            "duration_seconds": (
                round((t["completed_at"] - t["started_at"]).total_seconds(), 1)
                if t["completed_at"] and t["started_at"] else None
            ),
            "attempts": t["attempts"],
            "rerun_of": t["rerun_of"],
            "config_snapshot": t["config_snapshot"],
            "failures": [line for line in (t["error_log"] or "").splitlines() if line.strip()],
            "demographic_targets": t["targets"],
            "targets_report": t["targets_report"],
            "quality_summary": t["quality_summary"],
            "identity_check": (t["config_snapshot"] or {}).get("identity"),  # enabled, model and thresholds
        }
        for t in ctx.tasks
    ]


def _write_zip(rows: Rows, path: Path, ctx: _Context) -> None:
    sink = _ZipSink(path)
    used: set[str] = set()
    try:
        with _ReadAhead(rows, ctx.storage) as reader:
            for record, row in reader:
                _count(ctx, record)
                folder = _folder_name(record, used, ctx.multi_task)
                images = _persona_images(reader, record, folder, ctx)
                persona = {
                    **record,
                    "files": {
                        "base": next((im.name for im in images if im.role == "base"), None),
                        "images": [im.name for im in images if im.role == "variation"],
                    },
                    "image_meta": row["image_meta"],
                }
                sink.add_bytes(f"{folder}/persona.json", _pretty_json(persona), compress=True)
                for image in images:
                    sink.add_bytes(f"{folder}/{image.name}", image.data, compress=False)
        manifest = {
            "format": "zip",
            "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "app_version": __version__,
            "filter": ctx.filter_params,
            "counts": {**ctx.counts, "by_status": dict(sorted(ctx.by_status.items()))},
            "columns": list(EXPORT_COLUMNS),
            "tasks": _task_entries(ctx),
            "missing": ctx.missing,
        }
        sink.add_bytes("manifest.json", _pretty_json(manifest), compress=True)
    finally:
        sink.close()


def _write_hf_zip(rows: Rows, path: Path, ctx: _Context) -> None:
    sink = _ZipSink(path)
    try:
        _write_hf(rows, sink, ctx)
    finally:
        sink.close()


def _write_hf(rows: Rows, sink: Sink, ctx: _Context) -> None:
    used: set[str] = set()
    with tempfile.TemporaryFile() as metadata, _ReadAhead(rows, ctx.storage) as reader:
        for record, row in reader:
            _count(ctx, record)
            folder = _folder_name(record, used, ctx.multi_task)
            fields = {k: v for k, v in record.items() if k not in ("base_image", "images")}
            for image in _persona_images(reader, record, folder, ctx):
                file_name = f"{folder}/{image.name}"
                sink.add_bytes(f"train/{file_name}", image.data, compress=False)
                line = {
                    "file_name": file_name,
                    "image_role": image.role,
                    "image_index": image.index,
                    "source_key": image.uri,
                    **_image_identity(row, image.role, image.index),
                    **fields,
                }
                metadata.write((_dumps(line) + "\n").encode())
        sink.add_stream("train/metadata.jsonl", metadata, compress=True)
    sink.add_bytes("README.md", _dataset_card(ctx).encode(), compress=True)


def _fenced(text: str, lang: str = "") -> str:
    """A code block whose fence is longer than any backtick run inside (the text stays text)."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{lang}\n{text}\n{fence}"


def _dataset_card(ctx: _Context) -> str:
    counts = ctx.counts
    header = [
        "---",
        "license: other",
        "pretty_name: " + _dumps("Synthetic personas (Avatar Data Generator)"),
        "tags:",
        "- synthetic",
        "- personas",
        "- image",
        "task_categories:",
        "- image-to-text",
        "configs:",
        "- config_name: default",
        "  data_files:",
        "  - split: train",
        '    path: "train/**"',
        "---",
    ]
    lines = [
        *header,
        "",
        "# Synthetic personas",
        "",
        "Fictional social-media personas (names, demographics, four platform bios, job, education, places, an"
        " \"about\" text) with a generated base selfie and photo variations of the same face, made by the Avatar"
        " Data Generator. **No real person is depicted or described.** The persona texts were written by a"
        " language model and may contain stereotypes or errors.",
        "",
        "Load it with `datasets.load_dataset(\"<this folder>\")`. Each line of"
        " `train/metadata.jsonl` describes one image (`file_name`, relative to `train/`) and repeats its persona's"
        " fields; `persona_id` groups the images of one persona.",
        "",
        "## Counts",
        "",
        "| personas | images | images missing from storage |",
        "|---|---|---|",
        f"| {counts['personas']} | {counts['images']} | {counts['missing']} |",
        "",
    ]
    if ctx.by_status:
        lines += ["Personas by status: " + ", ".join(f"{k}: {v}" for k, v in sorted(ctx.by_status.items())), ""]
    lines += ["## Fields", "", "| field | description |", "|---|---|"]
    for name in ("file_name", "image_role", "image_index", "source_key", "image_faces", "image_face_distance",
                 *EXPORT_COLUMNS):
        if name in ("base_image", "images"):
            continue
        lines.append(f"| `{name}` | {FIELD_DESCRIPTIONS.get(name, '')} |")
    lines += ["", "## Generation tasks", ""]
    for task in _task_entries(ctx):
        snapshot = task.pop("config_snapshot")
        description = task.pop("description")
        lines += [f"### Task `{task['task_id']}`", "", "Population description:", "", _fenced(description), ""]
        lines += ["Request:", "", _fenced(_dumps(task, indent=2), "json"), ""]
        lines += ["Configuration frozen at submit time (bio prompts, toggles, providers, models):", ""]
        lines += [_fenced(_dumps(snapshot, indent=2), "json") if snapshot else "(none: a legacy task)", ""]
    lines += ["## Export filter", "", _fenced(_dumps(ctx.filter_params, indent=2), "json"), ""]
    if ctx.missing:
        lines += ["## Missing images", "", "These stored images could not be read and are not included:", ""]
        lines += [_fenced(_dumps(ctx.missing, indent=2), "json"), ""]
    return "\n".join(lines)


def _hf_features(schema: Any) -> dict[str, Any]:
    """The ``datasets`` feature description of a schema: Image for the image column, Value/Sequence otherwise."""
    import pyarrow as pa

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


def _write_parquet_images(rows: Rows, path: Path, ctx: _Context) -> None:
    """One row per image with the image's bytes embedded, the Hugging Face ``Image`` feature declared in the
    schema metadata (``datasets.load_dataset("parquet", ...)`` decodes it), and the persona's fields beside it."""
    import pyarrow as pa

    base = _parquet_schema()
    schema = pa.schema(
        [pa.field("image", pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])),
         pa.field("image_role", pa.string()), pa.field("image_index", pa.int64()),
         pa.field("image_faces", pa.int64()), pa.field("image_face_distance", pa.float64()), *base]
    )
    schema = schema.with_metadata({"huggingface": json.dumps({"info": {"features": _hf_features(schema)}})})

    def image_rows(reader: _ReadAhead) -> Iterator[dict[str, Any]]:
        for record, row in reader:
            _count(ctx, record)
            for image in _persona_images(reader, record, str(record["persona_id"]), ctx):
                yield {"image": {"bytes": image.data, "path": f"{record['persona_id']}/{image.name}"},
                       "image_role": image.role, "image_index": image.index,
                       **_image_identity(row, image.role, image.index), **record}

    with _ReadAhead(rows, ctx.storage) as reader:
        _write_parquet_rows(path, schema, image_rows(reader), CHUNK_ROWS // 4)


WRITERS: dict[str, Callable[[Rows, Path, _Context], None]] = {
    "csv": _write_csv,
    "json": _write_json,
    "jsonl": _write_jsonl,
    "parquet": _write_parquet,
    "parquet-images": _write_parquet_images,
    "zip": _write_zip,
    "hf": _write_hf_zip,
}
