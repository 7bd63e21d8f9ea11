"""The database connection: an engine and its session factory (``Database``), and migrations (one process at a
time per database: ``migration_lock``). Nothing connects at import time.

SQLite: WAL, foreign keys on, and a busy timeout of ``SQLITE_BUSY_TIMEOUT_SECONDS``, so that a writer waits for
another one (in any process) instead of failing; a write transaction begins with ``BEGIN IMMEDIATE``
(``Database.transaction``). PostgreSQL: pre-ping, so that a restarted server is reconnected to transparently.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from dotenv import dotenv_values
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_SECONDS = 60
# pg_advisory_lock's key for migrations: any fixed bigint, the same in every process ("adg-migr" in ASCII).
MIGRATION_LOCK_KEY = int.from_bytes(b"adg-migr", "big") - 2**63
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
    """``alembic upgrade REVISION`` on ``url`` (the app, every worker and ``python -m pipeline migrate`` call this
    at start-up), one process at a time: the others wait, then find nothing left to do."""
    with migration_lock(url) as connection:
        command.upgrade(alembic_config(url, connection), revision)


def downgrade(url: str, revision: str) -> None:
    """``alembic downgrade REVISION`` on ``url`` under the migration lock. It drops what later revisions added:
    ask ``downgrade_losses`` first."""
    with migration_lock(url) as connection:
        command.downgrade(alembic_config(url, connection), revision)


@contextlib.contextmanager
def migration_lock(url: str) -> Iterator[sa.Connection | None]:
    """Hold the database's migration lock, waiting for another process's migration to end.

    Two processes upgrading a fresh database at once would both find it empty and both create the same tables:
    one crashes. PostgreSQL: a session advisory lock (any host), yielded as the connection alembic must migrate
    on (alembic/env.py reads it from ``config.attributes["connection"]``), so the revision it reads is the one
    after the other process's upgrade. SQLite: an exclusive ``flock`` on ``<database file>.migrate.lock``
    (processes on one host share a SQLite file); yields None and alembic opens its own connection. An in-memory
    database belongs to one process: nothing to lock.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        engine = make_engine(url, pool_size=1, max_overflow=0)
        try:
            with engine.connect() as connection:
                connection.execute(sa.select(sa.func.pg_advisory_lock(MIGRATION_LOCK_KEY)))
                connection.commit()
                try:
                    yield connection
                finally:
                    # A failed migration leaves its transaction aborted; a lost connection has lost the lock too.
                    with contextlib.suppress(sa.exc.DBAPIError):
                        connection.rollback()
                        connection.execute(sa.select(sa.func.pg_advisory_unlock(MIGRATION_LOCK_KEY)))
                        connection.commit()
        finally:
            engine.dispose()  # closes the session: the lock cannot outlive it
        return
    database = parsed.database if parsed.get_backend_name() == "sqlite" else None
    if not database or database == ":memory:" or database.startswith("file:"):
        yield None
        return
    lock_path = Path(f"{database}.migrate.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file is closed, even if this process dies
        try:
            yield None
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def current_revision(url: str) -> str | None:
    """The revision the database is at (None when it has never been migrated)."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def is_downgrade(url: str, revision: str) -> bool:
    """Whether migrating ``url`` to ``revision`` goes down the chain; ``ValueError`` for an unknown revision."""
    script = ScriptDirectory.from_config(alembic_config(url))
    try:
        target = script.get_revision(revision)
    except CommandError as exc:
        raise ValueError(f"unknown revision {revision!r}: {exc}") from None
    current = current_revision(url)
    if current is None:
        return False
    if target is None:  # "base"
        return True
    below = {r.revision for r in script.iterate_revisions(current, "base")} - {current}
    return target.revision in below


def downgrade_losses(url: str, revision: str) -> list[str]:
    """What downgrading ``url`` to ``revision`` would drop, one line each: the tables and columns that hold data
    now and do not exist at ``revision`` (the schema there is read from an empty scratch SQLite database migrated
    to it). Empty when nothing stored would be lost."""
    with tempfile.TemporaryDirectory(prefix="adg-downgrade-") as scratch_dir:
        scratch = f"sqlite:///{Path(scratch_dir) / 'scratch.db'}"
        if revision != "base":
            command.upgrade(alembic_config(scratch), revision)
        kept = _columns(scratch)
    now = _columns(url)
    losses: list[str] = []
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            for table_name, columns in sorted(now.items()):
                table = sa.table(table_name, *(sa.column(c) for c in columns))
                if table_name not in kept:
                    rows = connection.scalar(sa.select(sa.func.count()).select_from(table)) or 0
                    if rows:
                        losses.append(f"table {table_name} ({_count(rows, 'row')})")
                    continue
                for column in sorted(columns - kept[table_name]):
                    query = sa.select(sa.func.count()).select_from(table).where(table.c[column].is_not(None))
                    values = connection.scalar(query) or 0
                    if values:
                        losses.append(f"column {table_name}.{column} ({_count(values, 'value')})")
    finally:
        engine.dispose()
    return losses


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _columns(url: str) -> dict[str, set[str]]:
    """Each table's column names (not alembic's own table)."""
    engine = make_engine(url)
    try:
        inspector = sa.inspect(engine)
        return {
            table: {c["name"] for c in inspector.get_columns(table)}
            for table in inspector.get_table_names()
            if table != "alembic_version"
        }
    finally:
        engine.dispose()


def alembic_config(url: str, connection: sa.Connection | None = None) -> Any:
    """Alembic's configuration for ``url``; with ``connection``, alembic migrates on it (the one holding the
    migration lock) instead of opening its own."""
    root = Path(__file__).resolve().parent.parent
    cfg = Config(str(root / "alembic.ini"))
    cfg.set_main_option("script_location", str(root / "alembic"))
    cfg.attributes["database_url"] = url
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg
