"""Reliability with several worker processes on PostgreSQL: the global cap, graceful shutdown, a database restart."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.factories import cli_in_process, offline_env

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.postgres


@pytest.fixture
def env(pg_url: str, tmp_path: Path) -> dict[str, str]:
    return {**os.environ, **offline_env(pg_url, tmp_path, LEASE_SECONDS="3", WORKER_TASK_SLOTS="4")}


def cli(env: dict[str, str], *argv: str) -> str:
    """A command that submits, sets or reads, run in this process (the workers are the processes under test)."""
    done = cli_in_process(env, *argv)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def work_until_idle(env: dict[str, str], name: str) -> None:
    """A worker process that runs what is left and exits."""
    done = subprocess.run([sys.executable, "-m", "pipeline", "work", "--until-idle", "--worker-id", name], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr


def start_worker(env: dict[str, str], name: str, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "pipeline", "work", "--worker-id", name], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=log.open("wb"))


def submit_many(env: dict[str, str], n: int, count: int, images: int) -> list[str]:
    cli(env, "create-user", "ana@example.org", "--password", "a long password")
    return [cli(env, "submit", "--user", "ana@example.org", "--description", f"task {i}", "--language", "English",
                "--count", str(count), "--images", str(images), "--seed", str(i)) for i in range(n)]


@pytest.fixture
def engine(pg_url: str) -> Iterator[sa.Engine]:
    eng = sa.create_engine(pg_url, pool_pre_ping=True)
    yield eng
    eng.dispose()


def statuses(engine: sa.Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return dict(conn.execute(sa.text("SELECT task_id, status FROM generation_tasks")).all())


def test_cap_holds_across_three_worker_processes(env: dict[str, str], engine: sa.Engine, tmp_path: Path) -> None:
    cli(env, "settings", "set", "max_concurrent_tasks", "2")
    tasks = submit_many(env, 10, count=8, images=8)
    schedule: list[tuple[float, float, int]] = [(0.0, 0.0, 2)]  # (command started, command returned, new cap)
    samples: list[tuple[float, int]] = []
    halt = threading.Event()

    def sample() -> None:
        while not halt.is_set():
            with engine.connect() as conn:
                held = conn.execute(sa.text(
                    "SELECT count(*) FROM generation_tasks WHERE lease_expires_at > (now() AT TIME ZONE 'utc') "
                    "AND status IN ('generating-data', 'data-generated', 'generating-images')"
                )).scalar_one()
            samples.append((time.time(), int(held)))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    workers = [start_worker(env, f"w{i}", tmp_path / f"w{i}.log") for i in range(3)]
    sampler.start()
    try:
        def wait_done(n: int, limit: float = 120) -> None:
            deadline = time.time() + limit
            while sum(s in ("completed",) for s in statuses(engine).values()) < n and time.time() < deadline:
                time.sleep(0.1)

        wait_done(2)
        asked = time.time()
        cli(env, "settings", "set", "max_concurrent_tasks", "4")
        schedule.append((asked, time.time(), 4))
        wait_done(6)
        asked = time.time()
        cli(env, "settings", "set", "max_concurrent_tasks", "1")
        schedule.append((asked, time.time(), 1))
        wait_done(10, limit=240)
    finally:
        halt.set()
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            w.wait(timeout=60)
        sampler.join()
    assert set(statuses(engine).values()) == {"completed"}, statuses(engine)

    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT task_id, started_at, completed_at, attempts FROM generation_tasks")).all()
    assert all(r.attempts == 1 for r in rows), "a task was claimed twice"
    # At every claim, the tasks already running were fewer than the cap in force then. While a `settings set`
    # command runs, the change lands at an unknown instant, so either the old or the new cap may apply.
    intervals = [(r.started_at.timestamp(), r.completed_at.timestamp()) for r in rows]

    def cap_at(t: float) -> int:
        settled = [cap for _, returned, cap in schedule if returned < t]
        landing = [cap for asked, returned, cap in schedule if asked - 0.1 <= t <= returned + 0.1]
        return max([settled[-1], *landing])

    for start, _ in intervals:
        running = sum(1 for s, e in intervals if s < start < e)
        assert running < cap_at(start), (start, running)
    assert max(n for _, n in samples) <= 4
    before_raise = [n for t, n in samples if t < schedule[1][0]]  # before the raise was asked for
    assert before_raise and max(before_raise) <= 2
    assert max(n for _, n in samples) >= 3, "raising the cap did not let more tasks run"
    assert len(rows) == len(tasks)


def _held(engine: sa.Engine, task_id: str) -> tuple[str | None, datetime | None, str]:
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT worker_id, lease_expires_at, status FROM generation_tasks WHERE task_id=:t"),
                           {"t": task_id}).one()
    return row.worker_id, row.lease_expires_at, row.status


def test_sigterm_finishes_the_unit_and_releases_the_lease(env: dict[str, str], engine: sa.Engine, tmp_path: Path) -> None:
    env = {**env, "LEASE_SECONDS": "60"}  # a released lease must not depend on expiry
    (task_id,) = submit_many(env, 1, count=20, images=20)
    worker = start_worker(env, "graceful", tmp_path / "graceful.log")
    deadline = time.time() + 60
    while time.time() < deadline:  # stop it once the first images are stored: some of the work is done, not all
        with engine.connect() as conn:
            if conn.execute(sa.text("SELECT coalesce(sum(image_count), 0) FROM generation_results")).scalar_one():
                break
        time.sleep(0.05)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 0
    worker_id, _lease, status = _held(engine, task_id)
    assert worker_id is None and status == "generating-images"
    assert "released on shutdown" in (tmp_path / "graceful.log").read_text()
    with engine.connect() as conn:
        before = conn.execute(sa.text("SELECT sum(image_count) FROM generation_results")).scalar_one()
    assert 0 < before < 400
    start = time.time()
    work_until_idle(env, "next")
    report = json.loads(cli(env, "status", task_id, "--json"))
    assert (report["status"], report["personas_done"], report["images_done"]) == ("completed", 20, 400)
    assert time.time() - start < 55, "the next worker had to wait for the lease to expire"


@pytest.mark.skipif(not os.environ.get("TEST_PG_CTL"), reason="needs TEST_PG_CTL from scripts/test.sh")
def test_worker_survives_a_postgresql_restart(env: dict[str, str], engine: sa.Engine, tmp_path: Path) -> None:
    (task_id,) = submit_many(env, 1, count=20, images=20)
    log = tmp_path / "worker.log"
    worker = start_worker(env, "survivor", log)
    try:
        deadline = time.time() + 60
        while _held(engine, task_id)[2] != "generating-images" and time.time() < deadline:
            time.sleep(0.05)
        pg_ctl = shlex.split(os.environ["TEST_PG_CTL"])
        subprocess.run([*pg_ctl, "-m", "fast", "restart"], check=True, capture_output=True, timeout=60)
        deadline = time.time() + 120
        status = ""
        while time.time() < deadline:
            try:
                status = _held(engine, task_id)[2]
            except sa.exc.OperationalError:
                status = "db-down"
            if status in ("completed", "partial", "failed"):
                break
            time.sleep(0.2)
        assert status == "completed", log.read_text()[-3000:]
        report = json.loads(cli(env, "status", task_id, "--json"))
        assert (report["personas_done"], report["images_done"], report["personas_failed"]) == (20, 400, 0)
        assert worker.poll() is None, "the worker died instead of reconnecting"
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)


def test_ten_random_kills_lose_nothing_and_duplicate_nothing(
    env: dict[str, str], engine: sa.Engine, tmp_path: Path
) -> None:
    """SIGKILL a worker at 10 random instants of one task (data stage, bases, mid-block, uploads): the task
    still ends with exactly the requested personas and images, no duplicate rows, no orphaned objects, and
    every stored base image kept (never regenerated)."""
    import hashlib
    import random

    # Each victim claims the task once (it is killed only once it holds it), and the rescuer's is the eleventh: above
    # the default TASK_MAX_ATTEMPTS of 10, which would (rightly) fail a task that keeps killing its workers.
    env = {**env, "LEASE_SECONDS": "1.5", "HEARTBEAT_SECONDS": "0.3",
           "OFFLINE_IMAGE_SIDE": "320", "TASK_MAX_ATTEMPTS": "12"}
    (task_id,) = submit_many(env, 1, count=24, images=12)
    rng = random.Random(20261125)
    media = tmp_path / "media"
    bases: dict[tuple[int, int], tuple[str, str]] = {}
    progress: list[int] = []
    for kill in range(10):
        name = f"victim-{kill}"
        worker = start_worker(env, name, tmp_path / f"{name}.log")
        # It claims the task once it has started and the last victim's lease has expired: kill it at a random
        # instant of its work, the first one as soon as it holds the task (in the data stage).
        deadline = time.time() + 60
        while _held(engine, task_id)[0] != name:
            assert worker.poll() is None, (tmp_path / f"{name}.log").read_text()[-3000:]
            assert time.time() < deadline, f"{name} never claimed the task"
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 1.2) if kill else 0.0)
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
        with engine.connect() as conn:
            rows = conn.execute(sa.text(
                "SELECT batch_number, slot, base_image_url FROM generation_results r JOIN generation_tasks t "
                "ON t.id = r.task_id WHERE t.task_id = :t AND base_image_url IS NOT NULL"), {"t": task_id}).all()
            images = conn.execute(sa.text("SELECT coalesce(sum(image_count), 0) FROM generation_results")).scalar_one()
        for batch, slot, uri in rows:
            digest = hashlib.sha256((media / uri).read_bytes()).hexdigest()
            assert bases.setdefault((batch, slot), (uri, digest)) == (uri, digest), "a stored base was replaced"
        progress.append(int(images))
    assert progress == sorted(progress), "stored images went backwards"
    assert progress[-1] < 24 * 12, f"the task finished before the last kill: {progress}"

    work_until_idle(env, "rescuer")
    report = json.loads(cli(env, "status", task_id, "--json"))
    assert (report["status"], report["personas_done"], report["images_done"]) == ("completed", 24, 288)
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT batch_number, slot, firstname, lastname, base_image_url, images, image_meta FROM generation_results"
        )).all()
    assert len(rows) == 24
    assert len({(r.batch_number, r.slot) for r in rows}) == 24 and len({(r.firstname, r.lastname) for r in rows}) == 24
    referenced = set()
    for r in rows:
        meta = r.image_meta if isinstance(r.image_meta, dict) else json.loads(r.image_meta)
        images = r.images if isinstance(r.images, list) else json.loads(r.images)
        assert len(images) == 12 and len(set(images)) == 12
        referenced |= {r.base_image_url, *images, *(m["thumb_key"] for m in meta["images"])}
        if (r.batch_number, r.slot) in bases:
            assert bases[(r.batch_number, r.slot)][0] == r.base_image_url
    stored = {str(p.relative_to(media)) for p in (media / task_id).rglob("*") if p.is_file()}
    assert stored == referenced, f"orphans: {sorted(stored - referenced)[:5]}, missing: {sorted(referenced - stored)[:5]}"
