"""Issue 20, item 13: processes starting at once on a fresh database migrate it one at a time (a PostgreSQL advisory
lock, a file lock for SQLite), so none crashes; SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import sqlalchemy as sa
from alembic.script import ScriptDirectory

from db.session import alembic_config, make_engine

ROOT = Path(__file__).resolve().parents[2]
PROCESSES = 3
# Each process imports everything, says it is ready, waits for "go" and migrates: the upgrades start together.
MIGRATE_ON_GO = textwrap.dedent("""
    import pathlib, sys, time
    sys.path.insert(0, sys.argv[1])
    from db.session import migrate
    url, ready, go = sys.argv[2], pathlib.Path(sys.argv[3]), pathlib.Path(sys.argv[4])
    ready.touch()
    deadline = time.monotonic() + 300
    while not go.exists():
        if time.monotonic() > deadline:
            sys.exit("no go")
        time.sleep(0.005)
    migrate(url)
""")


def test_processes_migrating_a_fresh_database_at_once_all_succeed(db_url: str, tmp_path: Path) -> None:
    go = tmp_path / "go"
    ready = [tmp_path / f"ready{i}" for i in range(PROCESSES)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", MIGRATE_ON_GO, str(ROOT), db_url, str(flag), str(go)],
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for flag in ready
    ]
    try:
        deadline = time.monotonic() + 300  # a loaded machine imports slowly
        while not all(flag.exists() for flag in ready):
            assert time.monotonic() < deadline, "the processes did not start"
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs if p.poll() is not None]
            time.sleep(0.05)
        go.touch()
        outcomes = [(p.wait(timeout=600), p.stderr.read() if p.stderr else "") for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    failures = [[line for line in err.splitlines() if "Error" in line][-1:] for code, err in outcomes if code != 0]
    assert failures == [], failures
    head = ScriptDirectory.from_config(alembic_config(db_url)).get_current_head()
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all() == [head]
    finally:
        engine.dispose()
