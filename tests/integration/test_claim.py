"""The claim on SQLite and PostgreSQL: the claimed object matches its row (written before the claim returns), a task
whose workers keep dying is failed, and the cap as stored (damaged, missing) is read the one way it is parsed."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

import db.queries as q
import db.queries.settings as db_settings
from db.models import GenerationTask, Setting, TaskStatus, utcnow
from db.session import Database
from pipeline.core.errors import ValidationError
from pipeline.submit.settings import parse_cap, read_settings, set_setting_value
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
        held.error_log = "noted"  # an earlier change to a column the finish sets: the error log grows from it
        held.targets_report = {"kept": True}  # an earlier change to another column survives it
        q.finish_task(session, held, status=TaskStatus.COMPLETED.value, errors=["a last problem"])
        held.cancel_requested = True  # and a later change wins, as any attribute set last
    row = task_row(database, task_id)
    assert (row.status, row.error_log, row.worker_id, row.lease_expires_at) == (
        TaskStatus.COMPLETED.value, "noted\na last problem", None, None)
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


def test_a_claim_in_the_same_transaction_counts_the_one_before(database: Database, db_url: str, tmp_path: Path) -> None:
    """A worker claims its share in one transaction: each claim sees the ones before it against the cap."""
    settings = make_settings(db_url, tmp_path)
    user = make_user(database)
    set_setting_value(database, "max_concurrent_tasks", "2", actor=None)
    for seed in range(3):
        submit(database, settings, user, seed=seed)
    with database.transaction(immediate=True) as session:
        claimed = [q.claim_next_task(session, worker_id="w", now=utcnow(), lease_seconds=60, max_attempts=10)
                   for _ in range(3)]
    assert [task is not None for task in claimed] == [True, True, False]


@pytest.mark.parametrize("stored", ["0", "-3", "65", "two", ""])
def test_a_damaged_cap_reads_as_the_default_of_one(
    database: Database, db_url: str, tmp_path: Path, stored: str, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The app never stores these (``parse_max_concurrent_tasks`` refuses them); a row edited by hand can hold
    them, and then the claim, the fair share and the settings page all read the seed's default, 1."""
    monkeypatch.setattr(db_settings, "_warned", set())  # each damaged value is reported once per process
    settings = make_settings(db_url, tmp_path)
    user = make_user(database)
    first, second = submit(database, settings, user, seed=1), submit(database, settings, user, seed=2)
    with database.transaction() as session:
        session.execute(sa.update(Setting).where(Setting.key == "max_concurrent_tasks").values(value=stored))
    for expected in (first, None):
        with database.transaction(immediate=True) as session:
            task = q.claim_next_task(session, worker_id="w", now=utcnow(), lease_seconds=60, max_attempts=10)
            assert (task.task_id if task else None) == expected
    now = utcnow()
    with database.transaction() as session:
        q.register_worker(session, worker_id="other", hostname="h", pid=1, slots=4, now=now)
    with database.session() as session:  # one task holds the cap of 1: nothing more can start
        assert q.fair_share(session, worker_id="w2", free=4, now=now, seen_after=now - timedelta(minutes=1)) == 0
    assert read_settings(database).max_concurrent_tasks == 1
    assert "max_concurrent_tasks is not valid" in caplog.text
    assert task_row(database, second).status == TaskStatus.PENDING.value


def test_a_missing_cap_row_is_recreated_with_the_default(database: Database, db_url: str, tmp_path: Path) -> None:
    settings = make_settings(db_url, tmp_path)
    user = make_user(database)
    first, second = submit(database, settings, user, seed=1), submit(database, settings, user, seed=2)
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


@pytest.mark.parametrize(("text", "message"), [
    ("4", None), (" 64 ", None), ("1", None),
    ("0", "between 1 and 64, got 0"), ("65", "between 1 and 64, got 65"), ("-1", "between 1 and 64, got -1"),
    ("2.5", "a whole number, got '2.5'"), ("+3", "a whole number, got '+3'"), ("", "a whole number, got ''"),
])
def test_the_one_parser_of_max_concurrent_tasks(text: str, message: str | None) -> None:
    if message is None:
        assert q.parse_max_concurrent_tasks(text) == int(text)
        assert parse_cap(text) == int(text)
        return
    with pytest.raises(ValueError, match=f"max_concurrent_tasks must be {re.escape(message)}"):
        q.parse_max_concurrent_tasks(text)
    with pytest.raises(ValidationError, match=f"max_concurrent_tasks must be {re.escape(message)}"):
        parse_cap(text)
