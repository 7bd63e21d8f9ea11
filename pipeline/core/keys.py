"""The one place that builds storage keys and export file names."""

from __future__ import annotations

import re
import secrets
import unicodedata

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def persona_prefix(task_id: str, batch_number: int, slot: int) -> str:
    """Folder of one persona's objects. Starts with the random task id, never a sequential id."""
    return f"{task_id}/b{batch_number:03d}-s{slot:02d}"


def _fresh() -> str:
    return secrets.token_hex(4)


def base_image_key(task_id: str, batch_number: int, slot: int, ext: str) -> str:
    """A new key for a persona's base image: every call gives another (a random part), so an object once written
    is never overwritten, not even by a worker whose lease expired while it was uploading."""
    return f"{persona_prefix(task_id, batch_number, slot)}/base-{_fresh()}.{ext}"


def variation_key(task_id: str, batch_number: int, slot: int, index: int, ext: str = "jpg") -> str:
    """A new key for a persona's variation ``index`` (see ``base_image_key``)."""
    return f"{persona_prefix(task_id, batch_number, slot)}/img{index:02d}-{_fresh()}.{ext}"


THUMBNAIL_SUFFIX = "_thumb.jpg"


def thumbnail_key(image_key: str) -> str:
    stem, _, _ext = image_key.rpartition(".")
    return f"{stem}{THUMBNAIL_SUFFIX}"


def is_thumbnail_key(uri: str) -> bool:
    """Whether a stored key or URI names a thumbnail the image stage made (small), not a full image."""
    return uri.endswith(THUMBNAIL_SUFFIX)


def task_prefix(task_id: str) -> str:
    return f"{task_id}/"


def extension_for(data: bytes) -> str:
    """The real extension of encoded image bytes, from their magic number."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return "bin"


CONTENT_TYPES = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp", "bin": "application/octet-stream"}


def content_type_for(key: str) -> str:
    return CONTENT_TYPES.get(key.rsplit(".", 1)[-1].lower(), "application/octet-stream")


def slugify(text: str, max_len: int = 40) -> str:
    """ASCII, filesystem-safe slug (used for export folder names)."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    slug = _UNSAFE.sub("-", ascii_text).strip("-._").lower()
    return slug[:max_len] or "persona"
