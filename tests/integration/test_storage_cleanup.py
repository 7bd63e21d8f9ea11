"""Stored objects and the rows that point to them stay in step (issue 20, item 6):

- image keys are new on every write, so a late upload of a worker whose lease expired never replaces an image
  the next attempt recorded; what such uploads leave unrecorded is swept when the persona is worked on;
- a delete reads the task's lease with the row locked (PostgreSQL), so a claim cannot slip in between;
- a delete whose storage fails after the rows are gone records a cleanup that a later worker pass finishes, and
  ``python -m pipeline cleanups`` lists what is pending.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

import db.queries as q
from db.models import utcnow
from db.session import Database
from pipeline import cli
from pipeline.core.config import reset_settings_cache
from pipeline.core.errors import ConflictError, StorageError
from pipeline.core.keys import base_image_key, persona_prefix, thumbnail_key, variation_key
from pipeline.storage import LocalStorage
from pipeline.submit.task_control import delete_task
from tests.factories import local_storage, make_settings, make_user, results_of, run_worker, submit
from tests.integration.test_executor import referenced_keys, stored_files


def test_a_late_upload_of_a_lost_lease_never_replaces_a_recorded_image(
    database: Database, db_url: str, tmp_path: Path
) -> None:
    settings = make_settings(db_url, tmp_path)
    storage = local_storage(tmp_path)
    task_id = submit(database, settings, make_user(database), count=2, images=4)
    # What a run that died (or lost its lease) between its uploads and its commit left in a persona's folder.
    orphan = f"{persona_prefix(task_id, 1, 0)}/img00-0badc0de.jpg"
    storage.put(orphan, b"\xff\xd8\xff an unrecorded upload")
    run_worker(database, storage, settings)
    rows = results_of(database, task_id)
    assert all(row.status == "completed" for row in rows)
    assert referenced_keys(rows) == stored_files(storage.root), "the unrecorded upload was swept"

    recorded = {uri: storage.get(uri) for uri in referenced_keys(rows)}
    for row in rows:  # an attempt whose lease expired uploads late, under the keys it would use
        batch, slot = row.batch_number, int(row.slot or 0)
        for index in range(4):
            key = variation_key(task_id, batch, slot, index)
            storage.put(key, b"\xff\xd8\xff late")
            storage.put(thumbnail_key(key), b"\xff\xd8\xff late")
        storage.put(base_image_key(task_id, batch, slot, "png"), b"\x89PNG late")
    assert {uri: storage.get(uri) for uri in recorded} == recorded, "a late upload replaced a recorded image"


class FailingStorage(LocalStorage):
    """Local files whose removal fails while ``failing`` is set (S3 down, a permission error)."""

    failing = True

    def delete_prefix(self, prefix: str) -> int:
        if self.failing:
            raise StorageError("delete s3://bucket/media: AccessDenied (HTTP 403)")
        return super().delete_prefix(prefix)


def test_a_delete_whose_storage_fails_is_finished_by_a_later_worker_pass(
    database: Database, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = make_settings(db_url, tmp_path)
    storage = FailingStorage(tmp_path / "media")
    task_id = submit(database, settings, make_user(database), count=2, images=4)
    storage.failing = False
    run_worker(database, storage, settings)
    assert stored_files(storage.root)
    storage.failing = True

    assert delete_task(database, storage, task_id) == 0  # the rows go; the objects cannot, yet
    with database.session() as session:
        assert q.get_task(session, task_id) is None
        pending = q.list_storage_cleanups(session)
    assert [(c.prefix, c.attempts) for c in pending] == [(f"{task_id}/", 1)]
    assert "AccessDenied" in (pending[0].last_error or "")
    assert stored_files(storage.root), "nothing could be removed"

    for key, value in {"DATABASE_URL": db_url, "STORAGE_URL": settings.storage_url,
                       "DATA_DIR": str(settings.data_dir)}.items():
        monkeypatch.setenv(key, value)
    reset_settings_cache()
    try:
        assert cli.main(["cleanups"]) == 0
        listed = capsys.readouterr().out
        assert f"{task_id}/" in listed and "1 storage cleanup(s) pending" in listed

        run_worker(database, storage, settings)  # still failing: kept, retried later
        with database.session() as session:
            (again,) = q.list_storage_cleanups(session)
        assert again.attempts == 2 and again.next_attempt_at > utcnow()

        storage.failing = False
        with database.transaction() as session:  # its next attempt is due
            q.note_storage_cleanup_failure(session, again.id, "waited", utcnow(), retry_after=timedelta(0))
        run_worker(database, storage, settings)
        assert stored_files(storage.root) == set()
        with database.session() as session:
            assert q.list_storage_cleanups(session) == []
        assert cli.main(["cleanups"]) == 0
        assert "0 storage cleanup(s) pending" in capsys.readouterr().out
    finally:
        reset_settings_cache()


def test_a_delete_waits_for_a_claim_under_way_and_then_refuses(database: Database, db_url: str,
                                                               tmp_path: Path) -> None:
    """A claim holds the task row while it takes the lease; a delete that started meanwhile must see that lease
    (PostgreSQL: the delete reads the row ``FOR UPDATE``; SQLite: one writer at a time)."""
    settings = make_settings(db_url, tmp_path)
    task_id = submit(database, settings, make_user(database), count=1, images=4)
    locked, outcome = threading.Event(), []

    def claim() -> None:
        with database.transaction(immediate=True) as session:
            task = q.get_task(session, task_id, for_update=True)
            assert task is not None
            locked.set()
            time.sleep(1.0)  # the delete starts meanwhile (if it starts later, it sees the lease all the same)
            task.worker_id, task.lease_expires_at = "claimer", utcnow() + timedelta(minutes=5)

    claimer = threading.Thread(target=claim)
    claimer.start()
    assert locked.wait(30)
    try:
        delete_task(database, local_storage(tmp_path), task_id)
    except ConflictError as exc:
        outcome.append(str(exc))
    claimer.join(30)
    assert outcome and "running" in outcome[0], "the task was deleted under a claim"
    with database.session() as session:
        assert q.get_task(session, task_id) is not None
