"""The bulk persona insert hands tuples to the driver: it must store exactly what the Core insert stores."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest
import sqlalchemy as sa

import db.queries as q
import db.queries.results as results
from db.models import GenerationResult, GenerationTask
from db.session import Database
from tests.factories import make_user

FROZEN = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=timezone.utc)


def _personas(batch: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = [
        {"firstname": f"Ana{batch}", "lastname": "Silva", "gender": "f", "ethnicity": "White", "age": 31,
         "bio_x": "pedal", "about": "Olá — ünïcode", "favorite": False},
        {"firstname": f"Rui{batch}", "lastname": "Costa", "gender": "m", "age": None, "bio_x": None, "favorite": False},  # no about
        {"firstname": f"Eva{batch}", "lastname": "Lopes", "gender": "f", "tags": ["a", "b"], "favorite": True,
         "status": "completed", "slot": 9},  # status and slot are the insert's own, as before
    ]
    return rows


def _tasks(database: Database, n: int) -> list[int]:
    user = make_user(database)
    with database.transaction() as session:
        return [
            q.insert_task(session, task_id=f"perf{i:08d}", user_id=user.id, persona_description="x",
                          bio_language="English", number_to_generate=3, images_per_persona=4).id
            for i in range(n)
        ]


def _stored(database: Database, task_pk: int) -> list[tuple[Any, ...]]:
    """The rows as the driver returns them (no type processing), without id and task."""
    with database.engine.connect() as conn:
        rows = conn.exec_driver_sql(
            f"SELECT * FROM generation_results WHERE task_id = {int(task_pk)} ORDER BY batch_number, slot"
        )
        names = list(rows.keys())
        return [tuple(v for k, v in zip(names, row, strict=True) if k not in {"id", "task_id"}) for row in rows]


def test_driver_insert_stores_what_the_core_insert_stores(database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    core_insert = results._core_insert
    monkeypatch.setattr(results, "utcnow", lambda: FROZEN)
    monkeypatch.setattr(results, "_core_insert", None)  # the driver path must be the one taken
    fast, core = _tasks(database, 2)
    batches = {1: _personas(1), 2: _personas(2)}
    with database.transaction() as session:
        assert q.insert_persona_batches(session, fast, batches) == 6
        fixed = {"task_id": core, "status": "pending", "created_at": FROZEN, "updated_at": FROZEN}
        assert core_insert(session, fixed, [(b, s, p) for b, ps in batches.items() for s, p in enumerate(ps)]) == 6
    assert _stored(database, fast) == _stored(database, core)
    with database.session() as session:
        rows = session.scalars(sa.select(GenerationResult).where(GenerationResult.task_id == fast)
                               .order_by(GenerationResult.batch_number, GenerationResult.slot)).all()
    assert [(r.batch_number, r.slot, r.status, r.attempts, r.image_count) for r in rows] == [
        (b, s, "pending", 0, 0) for b in (1, 2) for s in range(3)
    ]
    assert [r.favorite for r in rows[:3]] == [False, False, True] and rows[2].tags == ["a", "b"]
    assert rows[0].created_at == rows[0].updated_at == FROZEN and rows[1].about is None


def test_repeated_batch_is_rejected_by_the_unique_key(database: Database) -> None:
    (task,) = _tasks(database, 1)
    with database.transaction() as session:
        assert q.insert_personas(session, task, 1, _personas(1)) == 3
        assert q.insert_personas(session, task, 1, []) == 0
    with pytest.raises(sa.exc.IntegrityError), database.transaction() as session:
        q.insert_personas(session, task, 1, _personas(1))
    with database.session() as session:
        assert q.count_personas(session, task) == 3


def test_large_insert_in_pages_and_pending_orm_changes_flushed_first(database: Database) -> None:
    (task,) = _tasks(database, 1)
    persona = {"firstname": "A", "lastname": "B", "gender": "f"}
    with database.transaction() as session:
        session.get(GenerationTask, task).error_log = "flushed before the insert"  # type: ignore[union-attr]
        assert q.insert_persona_batches(session, task, {b: [persona] * 10 for b in range(1, 251)}) == 2500
        assert session.scalar(sa.select(GenerationTask.error_log).where(GenerationTask.id == task)) is not None
    with database.session() as session:
        assert q.count_personas(session, task) == 2500 and q.max_batch_number(session, task) == 250
