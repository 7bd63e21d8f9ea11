"""Storage removals a delete could not finish, retried by the workers.

A delete removes rows first, then the objects they pointed to; when the storage fails then (S3 down, a
permission error), the objects would stay forever with nothing pointing at them. So the delete records a
cleanup (``storage_cleanups``) in the transaction that removes the rows, and clears it once the storage
confirms. Every worker looks for cleanups left over at start and then every ``CLEANUP_SECONDS``, and retries
each due one (a failure waits longer each time). Removing a prefix twice is harmless: several workers may.
"""

from __future__ import annotations

import logging
import time

import db.queries as q
from db.models import utcnow
from db.session import Database
from pipeline.core.errors import PipelineError
from pipeline.storage import Storage

log = logging.getLogger(__name__)

CLEANUP_SECONDS = 60.0  # how often a worker looks for cleanups left over


def run_storage_cleanups(db: Database, storage: Storage, *, limit: int = 20) -> int:
    """Retry the due cleanups (at most ``limit``); returns how many are done."""
    with db.session() as session:
        due = [(c.id, c.prefix) for c in q.due_storage_cleanups(session, utcnow(), limit)]
    done = 0
    for cleanup_id, prefix in due:
        try:
            removed = storage.delete_prefix(prefix)
        except (PipelineError, OSError) as exc:  # OSError: a local folder that cannot be removed
            log.warning("storage cleanup of %s failed again: %s", prefix, exc)
            with db.transaction() as session:
                q.note_storage_cleanup_failure(session, cleanup_id, str(exc), utcnow())
            continue
        with db.transaction() as session:
            q.remove_storage_cleanup(session, cleanup_id)
        log.info("storage cleanup of %s done (%d objects removed)", prefix, removed)
        done += 1
    return done


class StorageCleaner:
    """A worker's retries of the cleanups left over: ``maybe_run()`` from its loop runs them at most every
    ``CLEANUP_SECONDS`` (the first call at once), and never lets a failure stop the worker."""

    def __init__(self, db: Database, storage: Storage, every_seconds: float = CLEANUP_SECONDS):
        self.db = db
        self.storage = storage
        self.every_seconds = every_seconds
        self._next = 0.0

    def maybe_run(self) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self.every_seconds
        try:
            run_storage_cleanups(self.db, self.storage)
        except Exception:  # a database hiccup here must not stop the worker's claims: retried next time
            log.exception("storage cleanups could not run")
