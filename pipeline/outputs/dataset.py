"""The notebook entry point: a task (or several, or a saved gallery view) as a pandas DataFrame with the CSV
export's columns, and the images as file paths or bytes when asked for::

    from pipeline import open_dataset
    df = open_dataset("a1b2c3d4e5f6", images="paths")
    df.groupby("gender").age.describe()

It reads the same configuration as the app (``DATABASE_URL``, ``STORAGE_URL``; a ``.env`` file) unless given
``settings``. Lists (tags, quality flags, image keys) stay Python lists rather than the CSV's JSON text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import db.queries as q
from db.models import User
from db.session import Database
from pipeline.core.config import Settings, get_settings
from pipeline.core.errors import NotFoundError, PipelineError, ValidationError
from pipeline.outputs.browse import GalleryFilter, resolve_criteria
from pipeline.outputs.exports.records import CHUNK_ROWS, EXPORT_COLUMNS, to_record
from pipeline.storage import LocalStorage, Storage, open_storage, read_image

if TYPE_CHECKING:  # pandas is loaded when a DataFrame is made (see open_dataset), not on import
    import pandas as pd

__all__ = ["IMAGE_CHOICES", "IMAGE_COLUMNS", "open_dataset"]

IMAGE_COLUMNS: dict[str, tuple[str, str]] = {  # images= -> the columns it adds
    "paths": ("base_image_path", "image_paths"),
    "bytes": ("base_image_bytes", "image_bytes"),
}
IMAGE_CHOICES = tuple(IMAGE_COLUMNS)
URL_SECONDS = 3600  # presigned image URLs (remote storage) stay valid this long


def _user(db: Database, email: str | None) -> User | None:
    if email is None:
        return None
    with db.session() as session:
        user = q.get_user_by_email(session, email)
    if user is None:
        raise NotFoundError(f"no user {email!r}")
    return user


def _view_filter(db: Database, user: User | None, view: str) -> GalleryFilter:
    if user is None:
        raise ValidationError("a saved view belongs to a user: give user='their e-mail' too")
    with db.session() as session:
        views = dict(q.list_saved_views(session, user.id))
    if view not in views:
        raise NotFoundError(f"{user.email} has no saved view {view!r}; theirs: {', '.join(views) or 'none'}")
    return GalleryFilter.from_query_params(views[view])


def _location(storage: Storage, uri: str) -> str | None:
    """Where a notebook can open an image: its file (local storage), else a presigned URL, else the URI itself."""
    if isinstance(storage, LocalStorage):
        path = storage.root / uri
        return str(path) if path.resolve().is_relative_to(storage.root) else None
    return storage.display_url(uri, URL_SECONDS) or uri


def _image_columns(storage: Storage, record: dict[str, Any], images: str) -> dict[str, Any]:
    uris = [str(u) for u in record["images"]]
    base = record["base_image"]
    if images == "paths":
        return dict(zip(IMAGE_COLUMNS["paths"], (_location(storage, base) if base else None,
                                                 [_location(storage, u) for u in uris]), strict=True))

    def read(uri: str) -> bytes | None:
        try:
            return read_image(storage, uri)
        except PipelineError:
            return None  # a missing image reads as None, as the exports list it as missing

    return dict(zip(IMAGE_COLUMNS["bytes"], (read(base) if base else None, [read(u) for u in uris]), strict=True))


def open_dataset(
    task: str | Sequence[str] | None = None,
    *,
    view: str | None = None,
    user: str | None = None,
    images: Literal["paths", "bytes"] | None = None,
    settings: Settings | None = None,
) -> pd.DataFrame:
    """The personas of ``task`` (a task id or several) or of the saved gallery ``view`` of ``user``, in generation
    order, as a DataFrame with the CSV export's columns (``EXPORT_COLUMNS``).

    ``user`` (an e-mail) limits the tasks to what that user may see, as in the app; without it every task is
    readable (as from the command line). ``images="paths"`` adds ``base_image_path`` and ``image_paths`` (files
    for local storage, presigned URLs for S3), ``images="bytes"`` adds ``base_image_bytes`` and ``image_bytes``.
    """
    import pandas as pd  # deferred: ``pipeline`` re-exports this function, and workers need no pandas

    if images is not None and images not in IMAGE_CHOICES:
        raise ValidationError(f"images must be one of {', '.join(IMAGE_CHOICES)} (or None), not {images!r}")
    if (task is None) == (view is None):
        raise ValidationError("give either a task id (or several) or a saved view's name")
    settings = settings or get_settings()
    db = Database(settings.database_url)
    try:
        viewer = _user(db, user)
        if view is not None:
            flt = _view_filter(db, viewer, view)
        else:
            flt = GalleryFilter(task_ids=[task] if isinstance(task, str) else list(task or []))
            if not flt.task_ids:
                raise ValidationError("give at least one task id")
        criteria = resolve_criteria(db, viewer, flt)
        storage = open_storage(settings.storage_url, endpoint_url=settings.s3_endpoint_url) if images else None
        records = []
        with db.session() as session:
            for row in q.gallery_export_rows(session, criteria, chunk=CHUNK_ROWS, with_meta=False):
                record = to_record(row)
                if storage is not None and images is not None:
                    record |= _image_columns(storage, record, images)
                records.append(record)
    finally:
        db.dispose()
    return pd.DataFrame.from_records(records, columns=[*EXPORT_COLUMNS, *IMAGE_COLUMNS.get(images or "", ())])
