"""Gallery downloads: the export of a view built once into a file, and a short-lived signed link that serves it.

``prepare_download`` writes the export of a user's view under ``<DATA_DIR>/downloads`` (reused while the view's
data is unchanged; a file nobody prepared for an hour is removed) and returns a link token. The app's
``/downloads/<token>`` route (``app.py``) calls ``open_download`` and streams the file from disk, so a download
is never held whole in the app's memory. A token is signed with the app's cookie key and carries the user, the
file and an expiry; it is honoured only while that user is still active (and still an administrator, if the
file was built for one).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import db.queries as q
from db.models import User
from db.session import Database
from pipeline.core.config import Settings, get_settings
from pipeline.core.errors import AccessDenied, NotFoundError, ValidationError
from pipeline.outputs.browse import GalleryFilter, resolve_criteria
from pipeline.outputs.exports import FORMATS, export_view
from pipeline.storage import Storage

log = logging.getLogger(__name__)

__all__ = [
    "FILE_NAMES",
    "LINK_SECONDS",
    "ROUTE",
    "Download",
    "PreparedDownload",
    "downloads_dir",
    "open_download",
    "prepare_download",
    "serve_download",
    "sign_link",
]

ROUTE = "/downloads/"  # the app serves ROUTE + token
LINK_SECONDS = 15 * 60  # how long a prepared link works
KEEP_SECONDS = 60 * 60  # a file nobody prepared for this long is removed
FILE_NAMES: dict[str, str] = {
    "csv": "personas.csv",
    "json": "personas.json",
    "jsonl": "personas.jsonl",
    "parquet": "personas.parquet",
    "parquet-images": "personas-images.parquet",
    "zip": "personas.zip",
    "hf": "personas-imagefolder.zip",
}
MIME_TYPES: dict[str, str] = {
    "csv": "text/csv",
    "json": "application/json",
    "jsonl": "application/jsonl",
    "parquet": "application/vnd.apache.parquet",
    "parquet-images": "application/vnd.apache.parquet",
    "zip": "application/zip",
    "hf": "application/zip",
}
_FORMAT_OF = {name: fmt for fmt, name in FILE_NAMES.items()}
_STORED_NAME = re.compile(r"^[0-9a-f]{64}-(?P<name>[a-z-]+\.[a-z]+)$")  # <view digest>-<file name>


@dataclass(frozen=True)
class PreparedDownload:
    """A file ready to download: ``url`` (relative to the app) works until ``expires_at`` (epoch seconds)."""

    token: str
    url: str
    filename: str
    size: int
    expires_at: float


@dataclass(frozen=True)
class Download:
    """What the download route streams: the file on disk, the name the browser saves it as, its type."""

    path: Path
    filename: str
    mime: str


def downloads_dir(settings: Settings) -> Path:
    return settings.data_dir / "downloads"


def prepare_download(
    db: Database, storage: Storage, settings: Settings, user: User, flt: GalleryFilter, fmt: str,
    *, now: float | None = None,
) -> PreparedDownload:
    """Export ``user``'s view ``flt`` as ``fmt`` into the downloads folder, unless a file of the same view,
    format and data is already there, and sign a link to it."""
    if fmt not in FORMATS:
        raise ValidationError(f"unknown export format {str(fmt)[:20]!r}: use one of {', '.join(FORMATS)}")
    now = time.time() if now is None else now
    folder = downloads_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale(folder, now)
    criteria = resolve_criteria(db, user, flt)  # raises NotFoundError for a task the user may not see
    with db.session() as session:
        version = q.gallery_view_version(session, criteria)
    view = json.dumps([user.id, user.is_admin, fmt, sorted(flt.to_query_params().items()), version])
    path = folder / f"{hashlib.sha256(view.encode()).hexdigest()}-{FILE_NAMES[fmt]}"
    if path.is_file():
        os.utime(path, (now, now))  # in use again: kept another hour
    else:
        export_view(db, storage, user, flt, fmt, path)
        os.utime(path, (now, now))
        log.info("prepared the %s download of user %s (%d bytes)", fmt, user.id, path.stat().st_size)
    expires_at = now + LINK_SECONDS
    token = sign_link(settings, user, path.name, expires_at)
    return PreparedDownload(token, ROUTE + token, FILE_NAMES[fmt], path.stat().st_size, expires_at)


def remove_stale(folder: Path, now: float) -> None:
    """Remove the files (and unfinished exports) of ``folder`` nobody prepared in the last ``KEEP_SECONDS``."""
    for entry in folder.iterdir():
        try:
            if now - entry.lstat().st_mtime < KEEP_SECONDS:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
        except OSError:  # removed meanwhile by another request
            continue


def _signing_key(settings: Settings) -> bytes:
    """A key of its own for download links, derived from the cookie key (a link is never a valid cookie)."""
    return hashlib.sha256(b"adg download links\0" + settings.cookie_key().encode()).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_link(settings: Settings, user: User, name: str, expires_at: float) -> str:
    """A token for the file ``name`` of the downloads folder, for ``user``, valid until ``expires_at``."""
    payload = _b64(json.dumps({"u": user.id, "a": user.is_admin, "f": name, "e": int(expires_at)}).encode())
    signature = hmac.new(_signing_key(settings), payload.encode(), hashlib.sha256).digest()
    return f"{payload}.{_b64(signature)}"


def open_download(db: Database, settings: Settings, token: str, *, now: float | None = None) -> Download:
    """The file a token names. Raises ``AccessDenied`` for a forged or expired token or a user no longer
    active (or no longer an administrator, for a file built for one); ``NotFoundError`` when the file is gone."""
    payload, _, signature = str(token).partition(".")
    try:
        expected = hmac.new(_signing_key(settings), payload.encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(expected, _unb64(signature)):
            raise ValueError("bad signature")
        claims = json.loads(_unb64(payload))
        user_id, admin, name, expires_at = int(claims["u"]), bool(claims["a"]), str(claims["f"]), int(claims["e"])
    except (ValueError, KeyError, TypeError) as exc:  # binascii.Error and JSONDecodeError are ValueErrors
        raise AccessDenied("this download link is not valid") from exc
    if (time.time() if now is None else now) > expires_at:
        raise AccessDenied("this download link has expired: prepare the download again")
    with db.session() as session:
        user = q.get_user(session, user_id)
        if user is None or not user.is_active or (admin and not user.is_admin):
            raise AccessDenied("this download link is not valid")
    found = _STORED_NAME.match(name)
    if found is None or found.group("name") not in _FORMAT_OF:
        raise AccessDenied("this download link is not valid")
    path = downloads_dir(settings) / name
    if not path.is_file():
        raise NotFoundError("this download is no longer available: prepare it again")
    fmt = _FORMAT_OF[found.group("name")]
    return Download(path, FILE_NAMES[fmt], MIME_TYPES[fmt])


@functools.cache
def _database(url: str) -> Database:
    """The download route's own connection pool: it answers outside any page run."""
    return Database(url)


def serve_download(token: str) -> Download:
    """``open_download`` with this process's settings and database: what the app's download route calls."""
    settings = get_settings()
    return open_download(_database(settings.database_url), settings, token)
