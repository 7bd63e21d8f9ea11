"""Task processes (``pipeline.worker.task_process``): each claimed task runs in a child process of the worker; cancels and
stops are relayed to it, and a child that dies hands its task back to be resumed, by a new child."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import db.queries as q
from db.models import PersonaStatus, TaskStatus
from db.session import Database
from pipeline.core.config import Settings
from pipeline.submit.settings import set_setting_value
from pipeline.submit.submission import cancel_task
from pipeline.worker.executor import Worker
from tests.factories import local_storage, make_settings, make_user, results_of, submit, task_row


def _children() -> list[int]:
    """The pids of this process's task processes."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid() and b"pipeline.worker.task_process" in cmdline:
            pids.append(int(entry.name))
    return pids


def _images(database: Database, task_id: str) -> int:
    return sum(r.image_count for r in results_of(database, task_id))


def _wait(condition: Callable[[], bool], limit: float = 120) -> None:
    deadline = time.time() + limit
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


@contextlib.contextmanager
def _batch_worker(database: Database, tmp_path: Path, settings: Settings) -> Iterator[tuple[Worker, threading.Thread]]:
    """A worker running its tasks in task processes until idle, on a thread; stopped and joined on the way out."""
    worker = Worker(database, local_storage(tmp_path), settings, poll_seconds=0.05, task_processes=True)
    runner = threading.Thread(target=worker.run, kwargs={"until_idle": True})
    runner.start()
    try:
        yield worker, runner
    finally:
        worker.stop()
        runner.join(timeout=60)


def test_tasks_run_in_task_processes_one_per_slot(database: Database, db_url: str, tmp_path: Path) -> None:
    settings = make_settings(db_url, tmp_path, worker_task_slots=2)
    set_setting_value(database, "max_concurrent_tasks", "2", actor=None)
    user = make_user(database)
    task_ids = [submit(database, settings, user, count=3, images=4, seed=i) for i in range(3)]
    with _batch_worker(database, tmp_path, settings) as (worker, runner):
        _wait(lambda: len(_children()) == 2)  # one per slot (a batch run starts them as it claims)
        runner.join(timeout=180)
        assert not runner.is_alive()
    assert [task_row(database, t).status for t in task_ids] == [TaskStatus.COMPLETED.value] * 3
    assert all(_images(database, t) == 12 for t in task_ids)
    assert sorted(outcome for _, outcome in worker.finished) == ["completed"] * 3
    _wait(lambda: _children() == [], 30)  # closed with the worker


def test_a_cancel_reaches_the_task_process(database: Database, db_url: str, tmp_path: Path) -> None:
    settings = make_settings(db_url, tmp_path, worker_task_slots=1)
    user = make_user(database)
    task_id = submit(database, settings, user, count=20, images=20)
    with _batch_worker(database, tmp_path, settings) as (worker, runner):
        _wait(lambda: _images(database, task_id) >= 8)
        assert cancel_task(database, task_id) == "cancel-requested"
        asked = time.time()
        runner.join(timeout=60)
        assert not runner.is_alive()
        assert time.time() - asked < 10  # relayed within a heartbeat and a unit
    assert task_row(database, task_id).status == TaskStatus.CANCELLED.value
    assert worker.finished == [(task_id, TaskStatus.CANCELLED.value)]


def test_a_killed_task_process_hands_its_task_back_and_a_new_one_finishes_it(
    database: Database, db_url: str, tmp_path: Path
) -> None:
    settings = make_settings(db_url, tmp_path, worker_task_slots=1)
    user = make_user(database)
    task_id = submit(database, settings, user, count=12, images=8)
    with _batch_worker(database, tmp_path, settings) as (worker, runner):
        _wait(lambda: _images(database, task_id) >= 16)
        [child] = _children()
        os.kill(child, signal.SIGKILL)
        runner.join(timeout=180)
        assert not runner.is_alive()
    task = task_row(database, task_id)
    assert task.status == TaskStatus.COMPLETED.value and task.attempts == 2  # handed back, claimed again
    assert [outcome for _, outcome in worker.finished] == ["crashed", "completed"]
    rows = results_of(database, task_id)
    assert len(rows) == 12 and all(r.status == PersonaStatus.COMPLETED.value and r.image_count == 8 for r in rows)
    assert len({(r.firstname, r.lastname) for r in rows}) == 12
    with database.session() as session:
        assert q.count_personas(session, task.id) == 12
