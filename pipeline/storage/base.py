"""The storage interface every backend implements, and reading an image wherever its row points.

Rows store *storage URIs*: a relative key for local storage, ``s3://bucket/key`` for S3. Legacy rows of
the original system hold public ``http(s)`` URLs; ``is_legacy_url`` tells them apart so they still display.
"""

from __future__ import annotations

from typing import Protocol

import requests

from pipeline.core.errors import StorageError
from pipeline.core.replies import MAX_IMAGE_REPLY_BYTES, read_capped, size_text


class Storage(Protocol):
    """Private object storage addressed by key; returns the URI to store in the database."""

    # Reads wait on a network: an export reads the images of the next personas ahead, on threads.
    remote: bool

    def put(self, key: str, data: bytes, content_type: str | None = None) -> str: ...

    def get(self, uri: str) -> bytes: ...

    def delete_prefix(self, prefix: str) -> int: ...

    def delete(self, uri: str) -> None: ...

    def list_keys(self, prefix: str) -> list[str]: ...

    def display_url(self, uri: str, expires_seconds: int = 300) -> str | None:
        """A short-lived URL a browser may fetch, or None when the bytes must be served inline."""
        ...


def is_legacy_url(uri: str | None) -> bool:
    return bool(uri) and str(uri).startswith(("http://", "https://"))


def read_image(storage: Storage, uri: str, timeout_seconds: float = 20.0) -> bytes:
    """Bytes of a stored image, including legacy public URLs of upgraded databases (read up to
    ``MAX_IMAGE_REPLY_BYTES``: the host is outside our control)."""
    if is_legacy_url(uri):
        try:
            with requests.get(uri, timeout=timeout_seconds, stream=True) as response:
                response.raise_for_status()
                body = read_capped(response, MAX_IMAGE_REPLY_BYTES)
        except requests.RequestException as exc:
            raise StorageError(f"cannot fetch legacy image URL: {type(exc).__name__}") from exc
        if body is None:
            raise StorageError(f"legacy image URL: the image is larger than {size_text(MAX_IMAGE_REPLY_BYTES)}; refused")
        return body
    return storage.get(uri)
