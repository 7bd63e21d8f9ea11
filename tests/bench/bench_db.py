"""Benchmarks 2 (claim overhead) and 9 (persona insert): regression guards for the database layer, not targets to
chase. A real task spends seconds per provider call; these rows only make sure a claim or a batch insert never
grows into something a user would notice."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

import db.queries as q
from db.models import GenerationTask, utcnow
from db.session import Database, migrate
from tests.bench.harness import BenchRow


def _fresh_sqlite(folder: Path, name: str) -> Database:
    url = f"sqlite:///{folder / name}"
    migrate(url)
    return Database(url)


def _seed_tasks(database: Database, n: int) -> None:
    with database.transaction() as session:
        user = q.insert_user(session, f"bench{n}@example.org", "x", "admin")
        now = utcnow()
        session.execute(
            sa.insert(GenerationTask),
            [
                {"task_id": f"t{i:011d}", "user_id": user.id, "persona_description": "bench", "bio_language": "English",
                 "number_to_generate": 1, "images_per_persona": 4, "status": "pending", "created_at": now,
                 "updated_at": now, "attempts": 0, "cancel_requested": False}
                for i in range(n)
            ],
        )
    with database.transaction() as session:
        q.set_setting(session, "max_concurrent_tasks", "64", None)


CLAIM_ROUND = 100
# Regression guards, set above what the plain code measured on 2026-12-04 (2 shared cores, SQLite): claim + finish
# 5.4x its baseline (about 3 ms a task), a batch insert 4.1x its baseline (about 0.4 ms per batch of 10). A user's
# task spends seconds per provider call; these only catch a change that makes either clearly worse.
CLAIM_GUARD = 8.0
INSERT_GUARD = 6.0


def bench_claim_overhead(url: str | None = None, n: int = 1000) -> BenchRow:
    """1,000 claims (each followed by a finish) against the same number of trivial DB round trips."""
    with tempfile.TemporaryDirectory() as tmp:
        database = Database(url) if url else _fresh_sqlite(Path(tmp), "claim.db")
        _seed_tasks(database, n)
        # Ours and the baseline (the same number of write transactions with the same number of statements: lock
        # cap row, count, select candidate, update, each a trivial round trip) take turns in rounds of 100, so
        # that a busy spell of the shared machine falls on both.
        measured = baseline = 0.0
        for _ in range(0, n, CLAIM_ROUND):
            start = time.perf_counter()
            for _ in range(CLAIM_ROUND):
                with database.transaction(immediate=True) as session:
                    task = q.claim_next_task(session, worker_id="bench", now=utcnow(), lease_seconds=60,
                                             max_attempts=10)
                    assert task is not None
                    q.finish_task(session, task, status="completed")
            measured += time.perf_counter() - start
            start = time.perf_counter()
            for _ in range(CLAIM_ROUND):
                with database.transaction(immediate=True) as session:
                    for _stmt in range(3):
                        session.execute(sa.text("SELECT 1"))
                    session.execute(sa.text("UPDATE settings SET value = value WHERE key = 'max_concurrent_tasks'"))
            baseline += time.perf_counter() - start
        database.dispose()
    return BenchRow(f"claim overhead ({n} tasks, {database.dialect})", measured, baseline, CLAIM_GUARD,
                    notes="regression guard: claim+finish per task vs 4 trivial statements per transaction")


def bench_bulk_insert(url: str | None = None, n: int = 100_000) -> BenchRow:
    """Insert 100k personas through ``q.insert_personas`` (batches of 10, as the data stage inserts them, 100 batches
    a transaction) against a raw DBAPI executemany of the same rows."""
    persona = {"firstname": "Ana", "lastname": "Silva", "gender": "f", "ethnicity": "White", "age": 31,
               "bio_facebook": "Cyclist. " * 10, "bio_instagram": "bike life", "bio_x": "pedal", "bio_tiktok": "go",
               "job_title": "Engineer", "workplace": "Acme", "edu_establishment": "Uni", "edu_study": "CS",
               "current_city": "Lisbon", "current_state": "Lisboa", "prev_city": "Porto", "prev_state": "Porto",
               "about": "About me"}
    with tempfile.TemporaryDirectory() as tmp:
        database = Database(url) if url else _fresh_sqlite(Path(tmp), "insert.db")
        _seed_tasks(database, 2)
        with database.session() as session:
            pks = list(session.scalars(sa.select(GenerationTask.id).order_by(GenerationTask.id)))
        batches = [[dict(persona, firstname=f"Ana{b}-{i}") for i in range(10)] for b in range(n // 10)]
        start = time.perf_counter()
        for chunk in range(0, len(batches), 100):
            with database.transaction() as session:
                for number, batch in enumerate(batches[chunk:chunk + 100], start=chunk + 1):
                    q.insert_personas(session, pks[0], number, batch)
        measured = time.perf_counter() - start
        now = utcnow().replace(tzinfo=None)
        cols = ["task_id", "batch_number", "slot", "status", "created_at", "updated_at", "attempts", "image_count",
                "favorite", *persona]
        flat = [
            (pks[1], b, slot, "pending", now, now, 0, 0, False, *row.values())
            for b, rows in enumerate(batches, start=1) for slot, row in enumerate(rows)
        ]
        placeholder = "?" if database.dialect == "sqlite" else "%s"
        sql = f"INSERT INTO generation_results ({', '.join(cols)}) VALUES ({', '.join([placeholder] * len(cols))})"
        start = time.perf_counter()
        raw = database.engine.raw_connection()
        try:
            cursor = raw.cursor()
            if database.dialect == "sqlite":
                cursor.execute("BEGIN")
            for chunk in range(0, len(flat), 1000):
                cursor.executemany(sql, flat[chunk:chunk + 1000])
            raw.commit()
        finally:
            raw.close()
        baseline = time.perf_counter() - start
        database.dispose()
    return BenchRow(f"bulk insert ({n:,} personas, {database.dialect})", measured, baseline, INSERT_GUARD,
                    notes="regression guard: db.queries.insert_personas, batches of 10, vs DBAPI executemany")
