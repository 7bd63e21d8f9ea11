"""Provider limits (issue 21): each provider's concurrency limit holds over every worker, process and host, is set
by an administrator and read live, adapts when the provider pushes back, and a provider that refuses most calls
stops the task early."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import db.queries as q
from db.models import AuditLog, Setting, utcnow
from db.session import Database
from pipeline.core.config import Settings
from pipeline.core.errors import ValidationError
from pipeline.providers.registry import ProviderCache
from pipeline.submit.settings import get_setting_value, set_setting_value
from pipeline.worker.executor import Worker
from tests.factories import cli_in_process, local_storage, make_settings, make_user, offline_env, submit, task_row
from tests.fakes.servers import IMAGE_MODEL, FakeOpenAI, error

ROOT = Path(__file__).resolve().parents[2]
OPENAI_KEY = "sk-test-limits-0123456789"


@pytest.fixture
def images() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(latency=0.25) as fake:
        yield fake


def openai_images_settings(db_url: str, tmp_path: Path, fake: FakeOpenAI, **overrides: Any) -> Settings:
    """Offline personas and prompts, images from the fake OpenAI server."""
    return make_settings(db_url, tmp_path, image_provider="openai", openai_base_url=fake.url + "/v1",
                         openai_api_key=OPENAI_KEY, openai_image_model=IMAGE_MODEL, **overrides)


def configure(db: Database, **values: str) -> None:
    set_setting_value(db, "identity_check", "off", actor=None)  # no face analysis of the fake's drawings
    for key, value in values.items():
        set_setting_value(db, key, value, actor=None)


def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> float:
    """Poll ``condition`` until it holds (returns how long that took); fail after ``seconds``."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > seconds:
            pytest.fail(f"not within {seconds:g} s: {what}")
        time.sleep(0.02)
    return time.monotonic() - start


def start_worker(db: Database, tmp_path: Path, settings: Settings) -> tuple[Worker, threading.Thread]:
    worker = Worker(db, local_storage(tmp_path), settings, providers=ProviderCache(settings), poll_seconds=0.05)
    thread = threading.Thread(target=worker.run, kwargs={"until_idle": True}, daemon=True)
    thread.start()
    return worker, thread


# -- settings ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["image_concurrency", "prompt_concurrency", "persona_concurrency",
                                 "image_rate_per_minute", "persona_rate_per_minute"])
def test_bad_limit_values_are_refused_with_a_clear_message_and_nothing_written(database: Database, key: str) -> None:
    configure(database)
    set_setting_value(database, key, "12", actor=None)
    assert get_setting_value(database, key) == "12"
    with database.session() as session:
        audits = session.scalar(sa.select(sa.func.count()).select_from(AuditLog))
    for bad in ("0", "-3", "abc", "1.5", "", "  ", "10000000", "1e3"):
        with pytest.raises(ValidationError, match=rf"{key} must be (a whole number|between 1 and \d+)"):
            set_setting_value(database, key, bad, actor=None)
    assert get_setting_value(database, key) == "12"
    with database.session() as session:
        assert session.scalar(sa.select(Setting.value).where(Setting.key == key)) == "12"
        assert session.scalar(sa.select(sa.func.count()).select_from(AuditLog)) == audits
    if key.endswith("_rate_per_minute"):
        set_setting_value(database, key, "off", actor=None)
        assert get_setting_value(database, key) == "off"


def test_the_command_line_refuses_a_bad_limit(db_url: str, tmp_path: Path) -> None:
    env = offline_env(db_url, tmp_path)
    done = cli_in_process(env, "settings", "set", "image_concurrency", "0")
    assert done.returncode == 2 and "image_concurrency must be between 1 and 512, got 0" in done.stderr
    done = cli_in_process(env, "settings", "set", "image_concurrency", "24")
    assert done.returncode == 0, done.stderr
    done = cli_in_process(env, "settings", "get", "image_concurrency")
    assert done.stdout.strip() == "24"


# -- live, shared, adaptive ----------------------------------------------------------------------------------------
def test_a_live_change_of_a_limit_takes_effect_within_seconds(
    database: Database, db_url: str, tmp_path: Path, images: FakeOpenAI
) -> None:
    """One call at a time while the limit is 1; raised to 4 while the task runs, 4 calls are out within seconds
    (no restart); lowered to 2, never more than 2 once the calls out at that moment have ended."""
    settings = openai_images_settings(db_url, tmp_path, images)
    configure(database, image_concurrency="1")
    task_id = submit(database, settings, make_user(database), count=16, images=8)
    _worker, thread = start_worker(database, tmp_path, settings)
    wait_for(lambda: len(images.posts()) >= 4, 60, "four image calls")
    assert images.max_in_flight == 1
    set_setting_value(database, "image_concurrency", "4", actor=None)
    took = wait_for(lambda: images.max_in_flight >= 4, 10, "four calls in flight after the limit was raised to 4")
    assert took < 10
    set_setting_value(database, "image_concurrency", "2", actor=None)
    time.sleep(1.0)  # the calls out when it was lowered end (0.25 s each); none of them is counted below
    images.max_in_flight = 0
    seen = len(images.posts())
    wait_for(lambda: len(images.posts()) >= seen + 6 or not thread.is_alive(), 60, "more image calls")
    assert images.max_in_flight <= 2
    thread.join(120)
    assert task_row(database, task_id).status == "completed"


def test_a_provider_answering_429_above_a_hidden_limit_is_backed_off_and_the_task_completes(
    database: Database, db_url: str, tmp_path: Path
) -> None:
    """The administrator allows 8 calls, the provider only 2 (429 with Retry-After above them): the effective limit
    drops while the task runs (the Tasks page's view says so), and every persona is made. Once the 429s stop, the
    limit grows back, so the drop is watched during the run, not read at its end."""
    provider = f"image:openai:{IMAGE_MODEL}"
    lowest = 8
    with FakeOpenAI(latency=0.1) as fake:
        fake.hidden_limit, fake.hidden_retry_after = 2, 0.3
        settings = openai_images_settings(db_url, tmp_path, fake, http_max_attempts=8)
        configure(database, image_concurrency="8")
        task_id = submit(database, settings, make_user(database), count=8, images=8)
        _worker, thread = start_worker(database, tmp_path, settings)
        deadline = time.monotonic() + 180
        while thread.is_alive() and time.monotonic() < deadline:
            with database.session() as session:
                row = {r.provider: r for r in q.provider_rows(session, utcnow())}.get(provider)
            if row is not None:
                lowest = min(lowest, row.effective)
            time.sleep(0.05)
        thread.join(5)
    task = task_row(database, task_id)
    assert task.status == "completed", task.error_log
    assert fake.throttled > 0 and lowest < 8
    with database.session() as session:
        rows = {row.provider: row for row in q.provider_rows(session, utcnow())}
    row = rows[provider]
    assert row.configured == 8 and row.recent_throttles > 0 and row.in_flight == 0


def test_a_provider_refusing_every_call_stops_the_task_early(
    database: Database, db_url: str, tmp_path: Path, images: FakeOpenAI
) -> None:
    """A revoked key (401 to everything): the task stops calling after most of its first calls failed, with a
    note saying why, instead of trying every persona."""
    images.always = error(401, f"Incorrect API key provided: {OPENAI_KEY}.", "invalid_api_key")
    settings = openai_images_settings(db_url, tmp_path, images)
    configure(database, image_concurrency="4")
    task_id = submit(database, settings, make_user(database), count=40, images=4)
    _worker, thread = start_worker(database, tmp_path, settings)
    thread.join(180)
    task = task_row(database, task_id)
    assert task.status == "failed"
    assert "stopped early: the image provider refused" in task.error_log
    assert "401 unauthorized" in task.error_log and OPENAI_KEY not in task.error_log
    assert len(images.posts()) <= 12  # 6 calls to decide, and those already out; not 40


@pytest.mark.postgres
def test_the_limit_holds_across_three_worker_processes(pg_url: str, tmp_path: Path, images: FakeOpenAI) -> None:
    """Three worker processes, six tasks, an image limit of 3: the fake never has more than 3 calls at once (each
    process alone would send more), and all 3 are used."""
    env = {**os.environ, **offline_env(pg_url, tmp_path, IMAGE_PROVIDER="openai", OPENAI_BASE_URL=images.url + "/v1",
                                       OPENAI_API_KEY=OPENAI_KEY, OPENAI_IMAGE_MODEL=IMAGE_MODEL,
                                       WORKER_TASK_SLOTS="2", LEASE_SECONDS="10")}

    def cli(*argv: str) -> str:  # in this process: the workers are the processes under test
        done = cli_in_process(env, *argv)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    for key, value in (("identity_check", "off"), ("max_concurrent_tasks", "6"), ("image_concurrency", "3")):
        cli("settings", "set", key, value)
    cli("create-user", "ana@example.org", "--password", "a long password")
    tasks = [cli("submit", "--user", "ana@example.org", "--description", f"task {i}", "--language", "English",
                 "--count", "4", "--images", "4", "--seed", str(i)) for i in range(6)]
    workers = [subprocess.Popen([sys.executable, "-m", "pipeline", "work", "--worker-id", f"w{i}"], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=(tmp_path / f"w{i}.log").open("wb"))
               for i in range(3)]
    engine = sa.create_engine(pg_url)
    try:
        def finished() -> bool:
            with engine.connect() as conn:
                done = conn.execute(sa.text("SELECT count(*) FROM generation_tasks WHERE status IN "
                                            "('completed', 'partial', 'failed')")).scalar_one()
            return int(done) == len(tasks)

        wait_for(finished, 240, "all six tasks finished")
        assert images.max_in_flight == 3  # never more than the limit, and all of it used
        with engine.connect() as conn:
            statuses = dict(conn.execute(sa.text("SELECT task_id, status FROM generation_tasks")).all())
            held = conn.execute(sa.text("SELECT count(*) FROM provider_slots WHERE expires_at > "
                                        "(now() AT TIME ZONE 'utc')")).scalar_one()
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(60)
        engine.dispose()
    logs = [(tmp_path / f"w{i}.log").read_text() for i in range(3)]
    assert set(statuses.values()) == {"completed"}, logs
    assert len(images.posts()) == 6 * 4 * 2  # a base and a grid per persona
    assert held == 0
    assert sum("claimed by" in log for log in logs) >= 2  # the tasks really ran in several processes
