"""The claim and finish write their row with one Core UPDATE each: the returned object must match the row exactly,
with nothing left to flush, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa

import db.queries as q
from db.models import GenerationTask, Setting, TaskStatus, utcnow
from db.session import Database
from tests.factories import make_settings, make_user, submit, task_row

COLUMNS = ("status", "worker_id", "lease_expires_at", "heartbeat_at", "started_at", "attempts", "updated_at",
           "completed_at", "error_log", "cancel_requested")


def _same_as_row(database: Database, task: GenerationTask) -> None:
    row = task_row(database, task.task_id)
    assert {c: getattr(task, c) for c in COLUMNS} == {c: getattr(row, c) for c in COLUMNS}


def test_claim_and_finish_objects_match_their_rows(database: Database, db_url: str, tmp_path: Path) -> None:
    settings = make_settings(db_url, tmp_path)
    user = make_user(database)
    task_id = submit(database, settings, user)
    before = utcnow()
    with database.transaction(immediate=True) as session:
        task = q.claim_next_task(session, worker_id="w1", now=before, lease_seconds=60, max_attempts=10)
        assert task is not None and task.task_id == task_id
        assert not session.dirty and not sa.inspect(task).modified
    assert task.status == TaskStatus.GENERATING_DATA.value and task.attempts == 1 and task.worker_id == "w1"
    assert task.started_at is not None and task.started_at >= before
    assert task.lease_expires_at == task.started_at + timedelta(seconds=60) == task.heartbeat_at + timedelta(seconds=60)
    _same_as_row(database, task)
    first_start = task.started_at

    # An expired lease is claimed again: started_at kept, attempts counted, an in-progress status kept.
    with database.transaction() as session:
        session.execute(sa.update(GenerationTask).where(GenerationTask.id == task.id).values(
            lease_expires_at=utcnow() - timedelta(seconds=1), status=TaskStatus.GENERATING_IMAGES.value))
    with database.transaction(immediate=True) as session:
        again = q.claim_next_task(session, worker_id="w2", now=utcnow(), lease_seconds=30, max_attempts=10)
        assert again is not None and again.id == task.id
    assert (again.attempts, again.started_at, again.status) == (2, first_start, TaskStatus.GENERATING_IMAGES.value)
    _same_as_row(database, again)

    with database.transaction() as session:
        held = q.assert_lease(session, again.id, "w2", utcnow())
        assert held is not None
        held.error_log = "noted"  # an unflushed change to a column the finish sets is overwritten by it
        held.targets_report = {"kept": True}  # an unflushed change to another column survives it
        q.finish_task(session, held, status=TaskStatus.COMPLETED.value, error_log=None)
        held.cancel_requested = True  # and a change after it is flushed at commit as usual
    row = task_row(database, task_id)
    assert (row.status, row.error_log, row.worker_id, row.lease_expires_at) == (TaskStatus.COMPLETED.value, None, None, None)
    assert row.cancel_requested is True and row.completed_at is not None and row.targets_report == {"kept": True}


def test_a_task_claimed_too_often_is_failed_not_claimed(database: Database, db_url: str, tmp_path: Path) -> None:
    settings = make_settings(db_url, tmp_path)
    user = make_user(database)
    worn, fresh = submit(database, settings, user, seed=1), submit(database, settings, user, seed=2)
    with database.transaction() as session:
        session.execute(sa.update(GenerationTask).where(GenerationTask.task_id == worn).values(attempts=3))
    with database.transaction(immediate=True) as session:
        assert q.claim_next_task(session, worker_id="w", now=utcnow(), lease_seconds=60, max_attempts=3) is None
    row = task_row(database, worn)
    assert row.status == TaskStatus.FAILED.value and row.completed_at is not None and row.attempts == 3
    assert "gave up after 3 attempts" in (row.error_log or "")
    with database.transaction(immediate=True) as session:
        task = q.claim_next_task(session, worker_id="w", now=utcnow(), lease_seconds=60, max_attempts=3)
        assert task is not None and task.task_id == fresh


def test_cap_zero_and_missing_cap_row(database: Database, db_url: str, tmp_path: Path) -> None:
    settings = make_settings(db_url, tmp_path)
    user = make_user(database)
    first, second = submit(database, settings, user, seed=1), submit(database, settings, user, seed=2)
    with database.transaction() as session:  # 0 cannot be set through the app; a hand-edited row can say so
        session.execute(sa.update(Setting).where(Setting.key == "max_concurrent_tasks").values(value="0"))
    with database.transaction(immediate=True) as session:
        assert q.claim_next_task(session, worker_id="w", now=utcnow(), lease_seconds=60, max_attempts=10) is None
    assert task_row(database, first).status == TaskStatus.PENDING.value
    with database.transaction() as session:  # a damaged database: the default cap (1) is recreated
        session.execute(sa.delete(Setting).where(Setting.key == "max_concurrent_tasks"))
    for expected in (first, None):
        with database.transaction(immediate=True) as session:
            task = q.claim_next_task(session, worker_id="w", now=utcnow(), lease_seconds=60, max_attempts=10)
            assert (task.task_id if task else None) == expected
    with database.session() as session:
        assert session.scalar(sa.select(Setting.value).where(Setting.key == "max_concurrent_tasks")) == "1"
        assert q.count_held_tasks(session, utcnow()) == 1
        assert q.runnable_task_exists(session, utcnow())  # the second one, waiting for the cap
    assert task_row(database, second).status == TaskStatus.PENDING.value
