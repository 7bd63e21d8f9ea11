"""What a page may show for a stored image: a short-lived URL the browser fetches, or the image's bytes.

Stored images are private. A storage that can sign URLs (S3) gives the browser a presigned URL valid for a few
minutes; any other storage (local files) hands the bytes to the page, which sends them after the login. Legacy
public ``http(s)`` URLs of upgraded databases are read by the server, like local files, so they still display.
"""

from __future__ import annotations

from pipeline.core.errors import PipelineError
from pipeline.storage import Storage, is_legacy_url, read_image

DISPLAY_URL_SECONDS = 300


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
