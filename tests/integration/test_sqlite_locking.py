"""SQLite between processes: a transaction that reads before it writes waits for another process's writer
instead of failing at once with "database is locked" (found by the executor benchmark: a submit next to
workers in other processes)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

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
