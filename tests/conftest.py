"""Shared fixtures: real SQLite files and real PostgreSQL databases (one fresh database per test).

``scripts/test.sh`` starts a throwaway PostgreSQL cluster and exports ``TEST_POSTGRES_URL`` (an admin URL).
Without it PostgreSQL tests are skipped, unless ``REQUIRE_POSTGRES=1`` (set by the test command), when
they fail: CI can never pass by silently skipping them.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from db.session import Database, migrate  # noqa: E402
from pipeline.submit import accounts  # noqa: E402
from tests.factories import copy_migrated_sqlite  # noqa: E402

# bcrypt's cost in tests: 2^4 rounds instead of the default 2^12 (0.25 s per hash or check on the CI machine, and
# the suite creates and logs in hundreds of users). What a test checks of a password (stored as bcrypt, checked,
# locked, the same cost for every attempt) does not depend on the cost; the test of the same cost for every
# attempt runs at the real cost (marker ``real_bcrypt_cost``), so a decoy hard-coded to a cheap cost still fails.
TEST_BCRYPT_ROUNDS = 4


@pytest.fixture(autouse=True)
def cheap_bcrypt(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Hash passwords at ``TEST_BCRYPT_ROUNDS`` in this process unless the test is marked ``real_bcrypt_cost``."""
    # The decoy hash is made once per process at the cost in force then: drop it whenever the cost changes.
    accounts._decoy_hash.cache_clear()
    if request.node.get_closest_marker("real_bcrypt_cost") is None:
        real_gensalt = bcrypt.gensalt

        def gensalt(rounds: int = TEST_BCRYPT_ROUNDS, prefix: bytes = b"2b") -> bytes:
            return real_gensalt(rounds, prefix)

        monkeypatch.setattr(bcrypt, "gensalt", gensalt)
    yield
    accounts._decoy_hash.cache_clear()


def postgres_admin_url() -> str:
    url = os.environ.get("TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("REQUIRE_POSTGRES") == "1":
            pytest.fail("TEST_POSTGRES_URL is not set but REQUIRE_POSTGRES=1: run tests via scripts/test.sh")
        pytest.skip("no PostgreSQL: run the tests via scripts/test.sh")
    return url


@pytest.fixture
def pg_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """URL of a new PostgreSQL database, dropped after the test: empty, or when the test uses ``database``, a copy
    of the one migrated once per session (``database`` is then on this URL)."""
    admin_url = postgres_admin_url()
    name = f"t_{uuid.uuid4().hex[:16]}"
    template = ""
    if "database" in request.fixturenames:
        template = f' TEMPLATE "{request.getfixturevalue("migrated_postgres_database")}"'
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"{template}')
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    admin.dispose()
    try:
        yield url
    finally:
        # A fresh engine: the server may have been restarted by the test (stale pooled connections).
        admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'app.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database of each kind, empty unless the test uses ``database``: every test using it runs on SQLite and on
    PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'app.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture(scope="session")
def migrated_sqlite_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to head once per session, copied by ``database``."""
    path = tmp_path_factory.mktemp("migrated") / "head.db"
    migrate(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def migrated_postgres_database() -> Iterator[str]:
    """The name of a PostgreSQL database migrated to head once per session, the template of ``database``'s."""
    admin_url = postgres_admin_url()
    name = f"head_{uuid.uuid4().hex[:16]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        migrate(admin_url.rsplit("/", 1)[0] + f"/{name}")  # its engine is disposed: nobody stays connected
        yield name
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()


@pytest.fixture
def database(request: pytest.FixtureRequest, db_url: str) -> Iterator[Database]:
    """A migrated database (both kinds) on ``db_url``: a copy of one migrated once per session by the same
    ``migrate`` (migrating each test's database anew took 0.1-0.5 s a test). tests/integration/test_migrations.py
    and test_migration_lock.py migrate fresh databases themselves."""
    if db_url.startswith("sqlite"):
        copy_migrated_sqlite(request.getfixturevalue("migrated_sqlite_file"), db_url)
    # PostgreSQL: pg_url made it a copy of migrated_postgres_database, seeing this fixture among the test's.
    db = Database(db_url)
    try:
        yield db
    finally:
        db.dispose()
