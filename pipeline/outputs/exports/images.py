"""Each persona's images for the formats that embed them: read from storage (or a legacy URL) base first, then
the variations in order, named ``base.<ext>`` and ``imgNN.<ext>``; an image that cannot be read is listed as
missing, never fatal."""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Generator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from pipeline.core.errors import PipelineError
from pipeline.core.keys import extension_for
from pipeline.outputs.exports.records import ExportContext, Record, Row, Rows
from pipeline.storage import Storage, read_image

IMAGE_READERS = 8  # personas read at once from a remote storage
READ_AHEAD_IMAGES = 48  # at most this many images read ahead of the one being written
_SAFE_EXT = re.compile(r"^[a-z0-9]{1,5}$")

Read = tuple[str, int | None, str, bytes | PipelineError]  # role, variation number, uri, the bytes or why not


@dataclass(frozen=True)
class ExportImage:
    name: str  # file name inside the persona's folder
    role: str  # base / variation
    index: int | None  # 1-based number of a variation; None for the base
    uri: str
    data: bytes


def read_images(rows: Rows, storage: Storage) -> Generator[tuple[Record, Row, list[Read]], None, None]:
    """Each row, in order, with its persona's images. Close it (``contextlib.closing``) when stopping early."""
    if storage.remote:
        yield from _read_ahead(rows, storage)
        return
    for record, row in rows:
        yield record, row, _read_persona(storage, record)


def _read_ahead(rows: Rows, storage: Storage) -> Generator[tuple[Record, Row, list[Read]], None, None]:
    """Remote reads each wait on the network, so the next personas are read on ``IMAGE_READERS`` threads while
    the current one is written. The read-ahead stops at ``READ_AHEAD_IMAGES`` images (but always takes the next
    persona): personas of 20 large images each would otherwise hold hundreds of MB."""
    pool = ThreadPoolExecutor(IMAGE_READERS, thread_name_prefix="export-read")
    window: deque[tuple[Record, Row, Future[list[Read]], int]] = deque()
    ahead = 0  # images of the personas in the window
    try:
        for record, row in rows:
            images = _image_count(record)
            while window and ahead + images > READ_AHEAD_IMAGES:
                done_record, done_row, reads, count = window.popleft()
                ahead -= count
                yield done_record, done_row, reads.result()
            window.append((record, row, pool.submit(_read_persona, storage, record), images))
            ahead += images
        while window:
            done_record, done_row, reads, _count = window.popleft()
            yield done_record, done_row, reads.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _image_count(record: Record) -> int:
    return (1 if record["base_image"] else 0) + len(record["images"])


def _read_persona(storage: Storage, record: Record) -> list[Read]:
    wanted: list[tuple[str, int | None, str]] = []
    if record["base_image"]:
        wanted.append(("base", None, str(record["base_image"])))
    wanted.extend(("variation", i, str(uri)) for i, uri in enumerate(record["images"], start=1))
    reads: list[Read] = []
    for role, index, uri in wanted:
        try:
            reads.append((role, index, uri, read_image(storage, uri)))
        except PipelineError as exc:
            reads.append((role, index, uri, exc))
    return reads


def persona_images(reads: list[Read], record: Record, folder: str, ctx: ExportContext) -> list[ExportImage]:
    """The images that were read, named; the others go to ``ctx.missing`` against ``folder``."""
    images: list[ExportImage] = []
    for role, index, uri, data in reads:
        stem = "base" if index is None else f"img{index:02d}"
        if isinstance(data, PipelineError):
            ctx.missing.append(
                {"persona_id": record["persona_id"], "folder": folder, "file": stem, "uri": uri, "error": str(data)}
            )
            ctx.counts["missing"] += 1
            continue
        images.append(ExportImage(f"{stem}.{_extension(data, uri)}", role, index, uri, data))
        ctx.counts["images"] += 1
    return images


def _extension(data: bytes, uri: str) -> str:
    """The extension the bytes call for, else the URI's own when it looks safe, else ``bin``."""
    ext = extension_for(data)
    if ext != "bin":
        return ext
    tail = uri.rsplit("/", 1)[-1].split("?", 1)[0]
    guess = tail.rsplit(".", 1)[-1].lower() if "." in tail else ""
    return guess if _SAFE_EXT.match(guess) else "bin"
