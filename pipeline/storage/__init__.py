"""Storage: where images live (a local folder, S3, memory for tests) and the face library.

Owns the ``Storage`` interface, its backends and the factory that picks one from ``STORAGE_URL``. Imports only
``pipeline.core``.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from pipeline.core.errors import ConfigError
from pipeline.storage.base import Storage, is_legacy_url, read_image
from pipeline.storage.local import LocalStorage, MemoryStorage
from pipeline.storage.s3 import S3Storage

__all__ = ["LocalStorage", "MemoryStorage", "Storage", "is_legacy_url", "open_storage", "read_image"]


def open_storage(url: str, *, endpoint_url: str | None = None) -> Storage:
    """Storage for ``STORAGE_URL``: ``file://path``, ``memory://`` or ``s3://bucket/prefix``."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        # file://data/media is relative (netloc "data"), file:///abs/path absolute.
        return LocalStorage(Path(parsed.netloc + parsed.path) if parsed.netloc else Path(parsed.path))
    if parsed.scheme == "memory":
        return MemoryStorage()
    if parsed.scheme == "s3":
        return S3Storage.from_url(url, endpoint_url=endpoint_url)
    raise ConfigError(f"STORAGE_URL {url!r} is not supported: use file://PATH, s3://BUCKET/PREFIX or memory://")
