"""AppTest fixtures: a fresh SQLite database and file storage per test, configured through the environment.

The pages read their configuration with ``get_settings()`` (cached) and open the runtime through
``st.cache_resource`` keyed by the URLs: a fresh tmp path gives a fresh runtime, and both caches are cleared
around every test so nothing leaks from one test into the next. ``WORKER_IN_APP=0``: tasks stay where a test
puts them unless the test runs a worker itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
import streamlit as st
from streamlit.testing.v1 import AppTest

import db.queries as q
from db.models import GenerationResult, User
from db.session import Database
from pipeline.core.config import Settings, get_settings, reset_settings_cache
from tests.factories import (
    copy_migrated_sqlite,
    local_storage,
    make_settings,
    make_user,
    offline_env,
    run_worker,
    submit,
)


@dataclass
class AppEnv:
    tmp: Path
    db_url: str
    media: Path
    db: Database

    @property
    def settings(self) -> Settings:
        return get_settings()

    def user(self, email: str) -> User | None:
        with self.db.session() as session:
            return q.get_user_by_email(session, email)

    def admin(self, email: str = "admin@example.org") -> User:
        return make_user(self.db, email, admin=True)

    def member(self, email: str = "user@example.org") -> User:
        return make_user(self.db, email, admin=False)

    def count(self, table: str) -> int:
        import sqlalchemy as sa

        with self.db.session() as session:
            return int(session.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())


def _clear_streamlit_caches() -> None:
    st.cache_resource.clear()
    st.cache_data.clear()


@pytest.fixture
def app_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, migrated_sqlite_file: Path) -> Iterator[AppEnv]:
    db_url = f"sqlite:///{tmp_path / 'app.db'}"
    env = offline_env(db_url, tmp_path, WORKER_IN_APP="0", APP_ENV="test", LEASE_SECONDS="10")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AUTH_COOKIE_KEY", raising=False)
    monkeypatch.delenv("FACES_URL", raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env from the repository
    reset_settings_cache()
    _clear_streamlit_caches()
    copy_migrated_sqlite(migrated_sqlite_file, db_url)  # as migrate(db_url) leaves it, without the 0.1-0.3 s
    database = Database(db_url)
    try:
        yield AppEnv(tmp=tmp_path, db_url=db_url, media=tmp_path / "media", db=database)
    finally:
        _clear_streamlit_caches()
        reset_settings_cache()
        database.dispose()


def open_persona_with(app_env: AppEnv, **fields: str) -> AppTest:
    """The gallery's detail view of one persona (opened from its card, as an administrator) whose stored fields are
    set to ``fields``: what a page shows of text a model wrote."""
    admin = app_env.admin()
    settings = make_settings(app_env.db_url, app_env.tmp)
    task_id = submit(app_env.db, settings, admin, count=1, images=4)
    run_worker(app_env.db, local_storage(app_env.tmp), settings)
    with app_env.db.transaction() as session:
        task = q.get_task(session, task_id)
        assert task is not None
        session.execute(sa.update(GenerationResult).where(GenerationResult.task_id == task.id).values(**fields))
        result_id = session.scalar(sa.select(GenerationResult.id).where(GenerationResult.task_id == task.id))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[2] / "pages" / "gallery.py"), default_timeout=60)
    at.session_state["adg_user_email"] = admin.email
    at.session_state["g_detail"] = result_id
    at.session_state["g_tab"] = "Cards"
    at.query_params["tasks"] = task_id
    at.run()
    return at

