"""Engine and session factory. Nothing connects at import time.

SQLite: WAL, foreign keys on, a long busy timeout, and explicit ``BEGIN`` handling so a write
transaction can ask for ``BEGIN IMMEDIATE`` (the executor's claim) via ``immediate_transaction``.
PostgreSQL: pre-ping so a restarted server is reconnected to transparently.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_SECONDS = 60
DEFAULT_DATABASE_URL = "sqlite:///data/app.db"  # the embedded default: one file, no server


def database_url_from_environment() -> str:
    """``DATABASE_URL`` from the environment, else from ``.env``, else the embedded default (for ``alembic``
    run by hand; the app passes its settings' URL instead)."""
    from dotenv import dotenv_values

    return os.environ.get("DATABASE_URL") or dotenv_values(".env").get("DATABASE_URL") or DEFAULT_DATABASE_URL


def _json_loads(text: str | bytes) -> Any:
    """JSON columns decoded with orjson (3-4× faster: exports and the gallery decode thousands of documents);
    what orjson refuses (``NaN``, which the standard encoder writes) falls back to the standard decoder."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``DATABASE_URL``; creates the folder of a SQLite file."""
    parsed = make_url(url)
    kwargs.setdefault("json_deserializer", _json_loads)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(
            url,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS, "check_same_thread": False},
            **kwargs,
        )
        _configure_sqlite(engine)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    return sa.create_engine(url, **kwargs)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take over transaction control from pysqlite so BEGIN IMMEDIATE is possible.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_SECONDS * 1000}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        if conn.get_execution_options().get("sqlite_immediate"):
            _begin_immediate(conn.connection.driver_connection)
        else:
            conn.exec_driver_sql("BEGIN")


SQLITE_LOCK_POLL_SECONDS = (0.0005, 0.004)  # first and longest pause between two tries for the write lock


def _begin_immediate(raw: Any) -> None:
    """``BEGIN IMMEDIATE``, waiting for another process's writer with short pauses (0.5 ms, doubling to 4 ms,
    jittered). SQLite's own busy handler backs off to 100 ms sleeps: with several worker processes, a lock
    held for a millisecond often kept the next writer waiting 25–100 ms (a claim, a persona's images)."""
    raw.execute("PRAGMA busy_timeout=0")
    try:
        deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_SECONDS
        pause, longest = SQLITE_LOCK_POLL_SECONDS
        while True:
            try:
                raw.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if ("locked" not in str(exc) and "busy" not in str(exc)) or time.monotonic() > deadline:
                    raise
            time.sleep(random.uniform(pause / 2, pause))
            pause = min(longest, pause * 2)
    finally:
        raw.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_SECONDS * 1000}")


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


class Database:
    """An engine plus its session factory; the one object the pipeline passes around for the DB."""

    def __init__(self, url: str, **engine_kwargs: Any):
        self.url = url
        self.engine = make_engine(url, **engine_kwargs)
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)
        # SQLite allows one writer at a time; serialising writers in-process avoids busy waits.
        self._write_lock = threading.RLock() if is_sqlite(self.engine) else None

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """A read session (commits nothing unless the caller does)."""
        with self.sessionmaker() as session:
            yield session

    @contextlib.contextmanager
    def transaction(self, *, immediate: bool = True) -> Iterator[Session]:
        """A session inside one transaction, committed on success and rolled back on error.

        On SQLite it takes the write lock at BEGIN (BEGIN IMMEDIATE), waiting for another process's writer: a
        deferred transaction that reads first cannot upgrade its lock once another process has committed, and
        fails at once with "database is locked". ``immediate=False`` is for a transaction that only writes.
        """
        lock = self._write_lock if self._write_lock is not None else contextlib.nullcontext()
        with lock, self.sessionmaker() as session:
            if immediate and self.dialect == "sqlite":
                session.connection(execution_options={"sqlite_immediate": True})  # begins: BEGIN IMMEDIATE
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def watch_commits(self) -> CommitWatch | None:
        """A cheap test of whether another connection committed (SQLite files); None where there is none."""
        if self.dialect != "sqlite":
            return None
        path = make_url(self.url).database
        if not path or path == ":memory:" or path.startswith("file:"):
            return None
        return CommitWatch(path)

    def dispose(self) -> None:
        self.engine.dispose()


class CommitWatch:
    """``PRAGMA data_version`` on a SQLite connection of its own: it changes when any other connection, in any
    process, commits. A look takes microseconds and no lock, so an idle worker can look often and run its real
    poll (an indexed read) only when something was written, e.g. a task submitted."""

    def __init__(self, path: str):
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._seen = self._version()

    def _version(self) -> int:
        return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    def changed(self) -> bool:
        """Whether another connection committed since the last look (or since the watch was opened)."""
        version = self._version()
        changed, self._seen = version != self._seen, version
        return changed

    def close(self) -> None:
        self._conn.close()


def migrate(url: str, revision: str = "head") -> None:
    """``alembic upgrade REVISION`` on ``url`` (the app and ``python -m pipeline migrate`` call this)."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    root = Path(__file__).resolve().parent.parent
    cfg = Config(str(root / "alembic.ini"))
    cfg.set_main_option("script_location", str(root / "alembic"))
    cfg.attributes["database_url"] = url
    return cfg
