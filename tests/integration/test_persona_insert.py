"""Inserting a batch of personas (``q.insert_personas``) on SQLite and PostgreSQL: what is stored, and a batch
never stored twice."""

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
    return [
        {"firstname": f"Ana{batch}", "lastname": "Silva", "gender": "f", "ethnicity": "White", "age": 31,
         "bio_x": "pedal", "about": "Olá — ünïcode", "favorite": False},
        {"firstname": f"Rui{batch}", "lastname": "Costa", "gender": "m", "age": None, "bio_x": None},  # no about
        {"firstname": f"Eva{batch}", "lastname": "Lopes", "gender": "f", "tags": ["a", "b"], "favorite": True,
         "status": "completed", "slot": 9},  # status and slot are the insert's own
    ]


def _task(database: Database) -> int:
    user = make_user(database)
    with database.transaction() as session:
        return q.insert_task(session, task_id="insert00001", user_id=user.id, persona_description="x",
                             bio_language="English", number_to_generate=6, images_per_persona=4).id


def test_a_batch_is_stored_in_its_slots_pending_with_the_column_defaults(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(results, "utcnow", lambda: FROZEN)
    task = _task(database)
    with database.transaction() as session:
        assert q.insert_personas(session, task, 1, _personas(1)) == 3
        assert q.insert_personas(session, task, 2, _personas(2)) == 3
    with database.session() as session:
        rows = session.scalars(sa.select(GenerationResult).where(GenerationResult.task_id == task)
                               .order_by(GenerationResult.batch_number, GenerationResult.slot)).all()
    assert [(r.batch_number, r.slot, r.status, r.attempts, r.image_count) for r in rows] == [
        (b, s, "pending", 0, 0) for b in (1, 2) for s in range(3)
    ]
    assert [r.favorite for r in rows[:3]] == [False, False, True] and rows[2].tags == ["a", "b"]
    assert rows[0].about == "Olá — ünïcode" and rows[1].about is None and rows[1].age is None
    assert rows[0].created_at == rows[0].updated_at == FROZEN


def test_a_repeated_batch_is_rejected_by_the_unique_key(database: Database) -> None:
    task = _task(database)
    with database.transaction() as session:
        assert q.insert_personas(session, task, 1, _personas(1)) == 3
        assert q.insert_personas(session, task, 1, []) == 0
    with pytest.raises(sa.exc.IntegrityError), database.transaction() as session:
        q.insert_personas(session, task, 1, _personas(1))
    with database.session() as session:
        assert q.count_personas(session, task) == 3


def test_pending_changes_to_the_task_commit_with_the_batch(database: Database) -> None:
    task = _task(database)
    with database.transaction() as session:
        row = session.get(GenerationTask, task)
        assert row is not None
        row.error_log = "written with the batch"
        q.insert_personas(session, task, 1, _personas(1))
        assert session.scalar(sa.select(GenerationTask.error_log).where(GenerationTask.id == task)) is not None
    with database.session() as session:
        assert q.count_personas(session, task) == 3 and q.max_batch_number(session, task) == 1
