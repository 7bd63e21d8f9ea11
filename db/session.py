"""The database connection: an engine and its session factory (``Database``), and migrations. Nothing connects
at import time.

SQLite: WAL, foreign keys on, and a busy timeout of ``SQLITE_BUSY_TIMEOUT_SECONDS``, so that a writer waits for
another one (in any process) instead of failing; a write transaction begins with ``BEGIN IMMEDIATE``
(``Database.transaction``). PostgreSQL: pre-ping, so that a restarted server is reconnected to transparently.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from dotenv import dotenv_values
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_SECONDS = 60
DEFAULT_DATABASE_URL = "sqlite:///data/app.db"  # the embedded default: one file, no server


def database_url_from_environment() -> str:
    """``DATABASE_URL`` from the environment, else from ``.env``, else the embedded default (for ``alembic``
    run by hand; the app passes its settings' URL instead)."""
    return os.environ.get("DATABASE_URL") or dotenv_values(".env").get("DATABASE_URL") or DEFAULT_DATABASE_URL


def _json_loads(text: str | bytes) -> Any:
    """JSON columns decoded with orjson (exports and the gallery decode thousands of documents); what orjson
    refuses (``NaN``, which the standard encoder writes) falls back to the standard decoder."""
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
        # BEGIN IMMEDIATE takes the write lock at once, waiting for another writer up to the busy timeout.
        immediate = conn.get_execution_options().get("sqlite_immediate")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


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

    def dispose(self) -> None:
        self.engine.dispose()


def migrate(url: str, revision: str = "head") -> None:
    """``alembic upgrade REVISION`` on ``url`` (the app and ``python -m pipeline migrate`` call this)."""
    command.upgrade(alembic_config(url), revision)


def alembic_config(url: str) -> Any:
    root = Path(__file__).resolve().parent.parent
    cfg = Config(str(root / "alembic.ini"))
    cfg.set_main_option("script_location", str(root / "alembic"))
    cfg.attributes["database_url"] = url
    return cfg
