"""Factories shared by integration tests: users, tasks, settings and a worker run to idle."""

from __future__ import annotations

import contextlib
import io
import sqlite3
import subprocess
import sys
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import db.queries as q
from db.models import User
from db.session import Database
from pipeline.cli import main
from pipeline.core.config import Settings, reset_settings_cache
from pipeline.providers.registry import ProviderCache
from pipeline.storage import LocalStorage, Storage
from pipeline.submit.accounts import create_user
from pipeline.submit.settings import set_setting_value
from pipeline.submit.submission import build_snapshot, submit_task, validate_spec
from pipeline.worker.executor import Worker

PASSWORD = "correct horse battery"
ROOT = Path(__file__).resolve().parent.parent


def cli_in_process(env: Mapping[str, str], *argv: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """``python -m pipeline ARGV`` with the variables ``env`` (from the repository, like the command), run in this
    process: its exit code, standard output and error. For a command whose process does not matter to the test (a
    submit, a setting, a status read): a fresh interpreter pays 1.5 s of imports per command, more on CI."""
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        patch.chdir(ROOT)
        patch.setattr(sys, "stdin", io.StringIO(stdin))
        reset_settings_cache()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = main(list(argv))
        finally:
            reset_settings_cache()
    return subprocess.CompletedProcess(["python", "-m", "pipeline", *argv], code, out.getvalue(), err.getvalue())


def on_databases(cases: Sequence[tuple[Any, ...]], *, both: Collection[str]) -> list[Any]:
    """Parameters ``(db_url, *case)`` for ``parametrize(..., indirect=["db_url"])``: every case on SQLite, and those
    whose name (``case[0]``) is in ``both`` on PostgreSQL too. For input refused before it reaches the database,
    where a second database adds nothing but time; a case that does reach it belongs in ``both``."""
    unknown = set(both) - {case[0] for case in cases}
    assert not unknown, unknown
    params = []
    for case in cases:
        params.append(pytest.param("sqlite", *case, id=f"sqlite-{case[0]}"))
        if case[0] in both:
            params.append(pytest.param("postgresql", *case, id=f"postgresql-{case[0]}", marks=pytest.mark.postgres))
    return params


def copy_migrated_sqlite(template: Path, url: str) -> None:
    """Make ``url``'s SQLite file (which must not exist yet) a copy of ``template``, a migrated database."""
    path = sa.engine.make_url(url).database
    assert path and not Path(path).exists(), url
    source, copy = sqlite3.connect(template), sqlite3.connect(path)
    try:
        source.backup(copy)  # a consistent copy whatever the journal mode
    finally:
        copy.close()
        source.close()


def make_settings(db_url: str, tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": db_url,
        "storage_url": f"file://{tmp_path / 'media'}",
        "data_dir": tmp_path / "data",
        "lease_seconds": 10.0,
        "heartbeat_seconds": 0.5,
        "offline_image_side": 192,
        "worker_in_app": False,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def offline_env(db_url: str, tmp_path: Path, **overrides: str) -> dict[str, str]:
    """The environment of a process (CLI, worker, app) on ``db_url`` with files under ``tmp_path`` and the
    offline providers drawing small photos; ``overrides`` add or replace variables."""
    return {
        "DATABASE_URL": db_url,
        "STORAGE_URL": f"file://{tmp_path / 'media'}",
        "DATA_DIR": str(tmp_path / "data"),
        "PERSONA_PROVIDER": "offline",
        "IMAGE_PROVIDER": "offline",
        "HEARTBEAT_SECONDS": "0.5",
        "OFFLINE_IMAGE_SIDE": "192",  # small offline photos: fast tests
    } | overrides


def make_user(db: Database, email: str = "ana@example.org", *, admin: bool = True) -> User:
    return create_user(db, email, PASSWORD, admin=admin)


def submit(
    db: Database,
    settings: Settings,
    user: User,
    *,
    count: int = 3,
    images: int = 4,
    seed: int | None = 7,
    description: str = "urban cyclists in Lisbon, 25-40",
    language: str = "Portuguese",
    toggles: Mapping[str, bool] | None = None,
) -> str:
    for key, value in (toggles or {}).items():
        set_setting_value(db, key, str(value).lower(), actor=None)
    spec = validate_spec(
        user_id=user.id, description=description, language=language, count=count, images_per_persona=images, seed=seed
    )
    return submit_task(db, spec, build_snapshot(db, settings))


def run_worker(
    db: Database,
    storage: Storage,
    settings: Settings,
    *,
    providers: ProviderCache | None = None,
    worker_id: str | None = None,
) -> Worker:
    # A short poll: a test never waits a second for a place another worker (or an expired lease) frees.
    worker = Worker(db, storage, settings, worker_id=worker_id, providers=providers, poll_seconds=0.05)
    worker.run(until_idle=True)
    return worker


def local_storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "media")


def results_of(db: Database, task_id: str) -> list[Any]:
    with db.session() as session:
        task = q.get_task(session, task_id)
        assert task is not None
        return q.list_results(session, task.id)


def task_row(db: Database, task_id: str) -> Any:
    with db.session() as session:
        return q.get_task(session, task_id)
