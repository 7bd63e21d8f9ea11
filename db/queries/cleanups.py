"""Queries on ``storage_cleanups``: stored objects whose rows are gone but whose removal from storage failed,
kept until a worker removes them (``pipeline.worker.cleanups``)."""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from db.models import StorageCleanup

__all__ = [
    "add_storage_cleanup",
    "due_storage_cleanups",
    "list_storage_cleanups",
    "note_storage_cleanup_failure",
    "remove_storage_cleanup",
]

RETRY_FIRST = timedelta(seconds=30)  # the first retry; each later one waits twice as long, up to RETRY_MOST
RETRY_MOST = timedelta(hours=1)


def add_storage_cleanup(session: Session, prefix: str, reason: str, now: datetime) -> StorageCleanup:
    """Record that every object below ``prefix`` is to be removed (in the transaction that removes their rows)."""
    cleanup = StorageCleanup(prefix=prefix, reason=reason[:255], created_at=now, attempts=0, next_attempt_at=now)
    session.add(cleanup)
    session.flush()
    return cleanup


def remove_storage_cleanup(session: Session, cleanup_id: int) -> None:
    """The storage confirmed the removal: nothing is left to do."""
    session.execute(sa.delete(StorageCleanup).where(StorageCleanup.id == cleanup_id))


def note_storage_cleanup_failure(
    session: Session, cleanup_id: int, error: str, now: datetime, *, retry_after: timedelta | None = None
) -> None:
    """One more failed attempt: kept, retried after ``retry_after`` (default: a pause growing with each try)."""
    cleanup = session.get(StorageCleanup, cleanup_id)
    if cleanup is None:
        return
    cleanup.attempts += 1
    cleanup.last_error = error[:1000]
    if retry_after is None:
        retry_after = min(RETRY_MOST, RETRY_FIRST * 2 ** min(cleanup.attempts - 1, 20))
    cleanup.next_attempt_at = now + retry_after


def due_storage_cleanups(session: Session, now: datetime, limit: int = 20) -> list[StorageCleanup]:
    """The cleanups whose next attempt is due, oldest first."""
    query = (sa.select(StorageCleanup).where(StorageCleanup.next_attempt_at <= now)
             .order_by(StorageCleanup.next_attempt_at, StorageCleanup.id).limit(limit))
    return list(session.scalars(query))


def list_storage_cleanups(session: Session) -> list[StorageCleanup]:
    """Every pending cleanup, oldest first (``python -m pipeline cleanups``)."""
    return list(session.scalars(sa.select(StorageCleanup).order_by(StorageCleanup.created_at, StorageCleanup.id)))
