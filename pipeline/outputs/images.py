"""What a page may show for a stored image: a short-lived URL the browser fetches, or the image's bytes; and for
lists of personas (the gallery's table and cards) always a small thumbnail.

Stored images are private. A storage that can sign URLs (S3) gives the browser a presigned URL valid for a few
minutes; any other storage (local files) hands the bytes to the page, which sends them after the login. Legacy
public ``http(s)`` URLs of upgraded databases are read by the server, like local files, so they still display.

A list never carries a full image: a persona without a stored thumbnail (only its base PNG, an upgraded row)
gets one made here, at most ``THUMBNAIL_SIDE`` pixels and ``MAX_THUMBNAIL_BYTES``; an image that is missing or
unreadable gets a grey placeholder. The pages keep what they read in an ``ImageCache`` capped in bytes.
"""

from __future__ import annotations

import base64
import functools
import io
import threading
from collections import OrderedDict

from PIL import Image

from pipeline.core.errors import PipelineError
from pipeline.core.images import decode_image
from pipeline.core.keys import is_thumbnail_key
from pipeline.storage import Storage, is_legacy_url, read_image

DISPLAY_URL_SECONDS = 300
THUMBNAIL_SIDE = 256  # the image stage's thumbnails are this size
MAX_THUMBNAIL_BYTES = 64 * 1024  # a stored thumbnail larger than this is made smaller again
THUMBNAIL_QUALITY = 80


def display_url(storage: Storage, uri: str | None, expires_seconds: int = DISPLAY_URL_SECONDS) -> str | None:
    """A short-lived URL for the browser, or None when the page must send the bytes (``image_bytes``)."""
    if not uri or is_legacy_url(uri):
        return None
    return storage.display_url(uri, expires_seconds)


def image_bytes(storage: Storage, uri: str | None) -> bytes | None:
    """The image's bytes wherever its row points, or None when it is missing or cannot be read."""
    if not uri:
        return None
    try:
        return read_image(storage, uri)
    except PipelineError:
        return None


def image_source(storage: Storage, uri: str | None, expires_seconds: int = DISPLAY_URL_SECONDS) -> str | bytes | None:
    """What ``st.image`` may show: a presigned URL where the storage gives one, else the bytes (None if unreadable)."""
    return display_url(storage, uri, expires_seconds) or image_bytes(storage, uri)


def thumbnail_url(storage: Storage, uri: str | None, expires_seconds: int = DISPLAY_URL_SECONDS) -> str | None:
    """A presigned URL of a stored thumbnail, or None when the page must send thumbnail bytes (``thumbnail_bytes``):
    only a thumbnail the image stage stored is signed, never a full image standing in for one."""
    if not uri or not is_thumbnail_key(uri):
        return None
    return display_url(storage, uri, expires_seconds)


def thumbnail_bytes(storage: Storage, uri: str | None) -> bytes:
    """A small JPEG for ``uri``: the stored thumbnail as it is when it is small, else one made from the image
    (at most ``THUMBNAIL_SIDE`` px), else the placeholder (no image, or one that cannot be read)."""
    data = image_bytes(storage, uri)
    if data is None:
        return placeholder_thumbnail()
    if len(data) <= MAX_THUMBNAIL_BYTES and data[:3] == b"\xff\xd8\xff":
        return data
    try:
        return make_thumbnail(data)
    except PipelineError:
        return placeholder_thumbnail()


def make_thumbnail(data: bytes, side: int = THUMBNAIL_SIDE) -> bytes:
    """A JPEG of encoded image ``data`` scaled to fit ``side`` × ``side``; ``ImageCheckError`` if unreadable."""
    img = decode_image(data, draft_side=side)
    img.thumbnail((side, side), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=THUMBNAIL_QUALITY)
    return buffer.getvalue()


@functools.cache
def placeholder_thumbnail() -> bytes:
    """A small grey JPEG shown where a persona has no readable image."""
    buffer = io.BytesIO()
    Image.new("RGB", (THUMBNAIL_SIDE // 4, THUMBNAIL_SIDE // 4), (200, 200, 200)).save(buffer, format="JPEG")
    return buffer.getvalue()


def data_uri(jpeg: bytes) -> str:
    """A ``data:`` URI of JPEG bytes (``st.dataframe``'s ImageColumn shows it)."""
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()


class ImageCache:
    """Images read for the pages, least recently used first out once they weigh more than ``max_bytes`` in all;
    an image larger than a tenth of that is never kept. Stored images never change under their key. Thread-safe
    (every session of the server shares one)."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.size = 0
        self._items: OrderedDict[tuple[str, ...], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, ...]) -> bytes | None:
        with self._lock:
            data = self._items.get(key)
            if data is not None:
                self._items.move_to_end(key)
            return data

    def put(self, key: tuple[str, ...], data: bytes) -> None:
        if len(data) > self.max_bytes // 10:
            return
        with self._lock:
            old = self._items.pop(key, None)
            self.size -= len(old) if old is not None else 0
            self._items[key] = data
            self.size += len(data)
            while self.size > self.max_bytes:
                _, dropped = self._items.popitem(last=False)
                self.size -= len(dropped)
