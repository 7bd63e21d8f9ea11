"""Alembic environment: the URL comes from ``db.session.alembic_config`` (the app and the CLI), else from
``DATABASE_URL`` (the environment or ``.env``, as the app reads it), never from alembic.ini. SQLite runs in batch mode with foreign keys off during migrations: batch mode recreates
tables, and with foreign keys on, ON DELETE CASCADE would silently delete child rows.

When ``db.session.migrate`` passes a connection (``config.attributes["connection"]``: on PostgreSQL, the one
holding the migration's advisory lock), the migration runs on it; otherwise on a connection of its own."""

from __future__ import annotations

import logging
from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection

from db.models import Base
from db.session import database_url_from_environment, make_engine

config = context.config
if config.config_file_name and not config.attributes.get("database_url"):
    fileConfig(config.config_file_name, disable_existing_loggers=False)
log = logging.getLogger("alembic.env")


def database_url() -> str:
    url = config.attributes.get("database_url")
    if url:
        return str(url)
    return database_url_from_environment()


def run_migrations_offline() -> None:
    context.configure(url=database_url(), target_metadata=Base.metadata, literal_binds=True, compare_type=True,
                      render_as_batch=database_url().startswith("sqlite"))
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_on(connection: Connection) -> None:
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        # Outside any transaction, or SQLite ignores it.
        connection.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")  # type: ignore[union-attr]
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=sqlite,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()


def run_migrations_online() -> None:
    given = config.attributes.get("connection")
    if given is not None:
        run_migrations_on(given)
        return
    engine = make_engine(database_url())
    try:
        with engine.connect() as connection:
            run_migrations_on(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
