"""SQLite between processes: a transaction that reads before it writes waits for another process's writer
instead of failing at once with "database is locked" (found by the executor benchmark: a submit next to
workers in other processes)."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from db.session import Database, migrate
from pipeline.submit.settings import set_setting_value
from pipeline.submit.submission import build_snapshot, submit_task, validate_spec
from tests.factories import make_settings, make_user


def test_read_then_write_waits_for_another_processes_writer(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    migrate(url)
    here, elsewhere = Database(url), Database(url)  # two engines: no shared in-process lock, like two processes
    user = make_user(here)
    settings = make_settings(url, tmp_path)
    spec = validate_spec(user_id=user.id, description="urban cyclists in Lisbon", language="English", count=1,
                         images_per_persona=4)
    snapshot = build_snapshot(here, settings)
    done = threading.Event()

    def other_writer() -> None:
        set_setting_value(elsewhere, "crop_white_borders", "true", actor=None)
        done.set()

    try:
        with here.transaction() as session:
            session.execute(sa.text("SELECT count(*) FROM users"))  # read first
            thread = threading.Thread(target=other_writer)
            thread.start()
            time.sleep(0.3)  # the other process commits now, unless this transaction holds the write lock
            assert not done.is_set(), "the other writer must wait for this transaction"
        thread.join(timeout=30)
        assert done.is_set()
        task_id = submit_task(here, spec, snapshot)  # a read-then-write transaction of the app
        assert task_id
    finally:
        here.dispose()
        elsewhere.dispose()


class _LockedConnection:
    """A DBAPI connection whose ``BEGIN IMMEDIATE`` finds the write lock taken ``busy`` times."""

    def __init__(self, busy: int, error: str = "database is locked"):
        self.busy, self.error, self.statements = busy, error, []  # type: ignore[var-annotated]

    def execute(self, sql: str) -> None:
        self.statements.append(sql)
        if sql == "BEGIN IMMEDIATE" and self.busy:
            self.busy -= 1
            raise sqlite3.OperationalError(self.error)


def test_begin_immediate_retries_with_short_pauses_and_keeps_the_busy_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another process's writer is waited for in pauses of at most 4 ms (SQLite's own busy handler backs off to
    100 ms sleeps, which kept the next writer waiting long after the lock was free); the connection's busy
    timeout is off while it polls and restored after; any other error is raised at once."""
    from db import session as db_session

    pauses: list[float] = []
    monkeypatch.setattr(db_session.time, "sleep", pauses.append)
    conn = _LockedConnection(busy=12)
    db_session._begin_immediate(conn)
    assert conn.statements[0] == "PRAGMA busy_timeout=0" and conn.statements[-1] == "PRAGMA busy_timeout=60000"
    assert conn.statements.count("BEGIN IMMEDIATE") == 13 and len(pauses) == 12
    assert max(pauses) <= 0.004 and pauses[0] <= 0.0005 and sum(pauses) < 0.05

    other = _LockedConnection(busy=1, error="disk I/O error")
    with pytest.raises(sqlite3.OperationalError, match="disk I/O"):
        db_session._begin_immediate(other)
    assert other.statements[-1] == "PRAGMA busy_timeout=60000"

    monkeypatch.setattr(db_session, "SQLITE_BUSY_TIMEOUT_SECONDS", 0)  # the deadline passes: locked is raised
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        db_session._begin_immediate(_LockedConnection(busy=1000))
