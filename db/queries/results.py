"""Queries on ``generation_results`` used by the executor (the gallery's live in ``gallery``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

from db.models import GenerationResult, PersonaStatus, utcnow

__all__ = [
    "append_images",
    "batch_exists",
    "count_personas",
    "existing_names",
    "get_result",
    "insert_persona_batches",
    "insert_personas",
    "list_results",
    "mark_persona",
    "max_batch_number",
    "pending_persona_ids",
    "set_base_image",
    "store_review",
]


def count_personas(session: Session, task_pk: int) -> int:
    return session.scalar(sa.select(sa.func.count()).where(GenerationResult.task_id == task_pk)) or 0


def max_batch_number(session: Session, task_pk: int) -> int:
    return session.scalar(sa.select(sa.func.max(GenerationResult.batch_number)).where(GenerationResult.task_id == task_pk)) or 0


def batch_exists(session: Session, task_pk: int, batch_number: int) -> bool:
    query = sa.select(GenerationResult.id).where(
        GenerationResult.task_id == task_pk, GenerationResult.batch_number == batch_number
    )
    return session.scalar(query.limit(1)) is not None


def existing_names(session: Session, task_pk: int) -> list[tuple[str, str]]:
    return [
        (first, last)
        for first, last in session.execute(
            sa.select(GenerationResult.firstname, GenerationResult.lastname).where(GenerationResult.task_id == task_pk)
        )
    ]


def insert_personas(
    session: Session, task_pk: int, batch_number: int, personas: Iterable[Mapping[str, Any]]
) -> int:
    """Insert one batch's personas (slots 0..n-1). The unique (task, batch, slot) rule rejects a repeated batch."""
    return insert_persona_batches(session, task_pk, {batch_number: personas})


def insert_persona_batches(
    session: Session, task_pk: int, batches: Mapping[int, Iterable[Mapping[str, Any]]]
) -> int:
    """Insert several batches in one executemany (imports, benchmarks); same rows as ``insert_personas``."""
    now = utcnow()
    pending = PersonaStatus.PENDING.value
    rows = [
        {**p, "task_id": task_pk, "batch_number": batch, "slot": slot, "status": pending, "created_at": now,
         "updated_at": now}
        for batch, personas in batches.items()
        for slot, p in enumerate(personas)
    ]
    keys = {k for row in rows for k in row}
    if any(len(row) != len(keys) for row in rows):  # one executemany needs the same keys in every row
        rows = [{k: row.get(k) for k in keys} for row in rows]
    if rows:
        table = cast(sa.Table, GenerationResult.__table__)
        session.execute(table.insert(), rows)  # Core on the table: no ORM bookkeeping per row
    return len(rows)


def pending_persona_ids(session: Session, task_pk: int) -> list[int]:
    return list(
        session.scalars(
            sa.select(GenerationResult.id)
            .where(GenerationResult.task_id == task_pk, GenerationResult.status == PersonaStatus.PENDING.value)
            .order_by(GenerationResult.batch_number, GenerationResult.slot, GenerationResult.id)
        )
    )


def get_result(session: Session, result_id: int) -> GenerationResult | None:
    return session.get(GenerationResult, result_id)


def list_results(session: Session, task_pk: int) -> list[GenerationResult]:
    return list(
        session.scalars(
            sa.select(GenerationResult)
            .where(GenerationResult.task_id == task_pk)
            .order_by(GenerationResult.batch_number, GenerationResult.slot, GenerationResult.id)
        )
    )


def set_base_image(session: Session, result: GenerationResult, uri: str, meta: dict[str, Any]) -> None:
    image_meta = dict(result.image_meta or {})
    image_meta["base"] = meta
    result.base_image_url = uri
    result.image_meta = image_meta
    result.updated_at = utcnow()


def append_images(
    session: Session, result: GenerationResult, uris: list[str], metas: list[dict[str, Any]], extra: dict[str, Any]
) -> None:
    """Append one finished block: its URIs to ``images`` and their metadata to ``image_meta``."""
    image_meta = dict(result.image_meta or {})
    image_meta["images"] = [*image_meta.get("images", []), *metas]
    image_meta.setdefault("blocks", []).append(extra)
    result.images = [*(result.images or []), *uris]
    result.image_meta = image_meta
    result.image_count = len(result.images)
    result.updated_at = utcnow()


def mark_persona(
    session: Session, result: GenerationResult, status: str, error: str | None = None, now: datetime | None = None
) -> None:
    result.status = status
    result.error = error
    if status == PersonaStatus.FAILED.value:
        result.attempts = (result.attempts or 0) + 1
    result.updated_at = now or utcnow()


def store_review(
    session: Session,
    task: Any,
    per_persona: Mapping[int, dict[str, Any]],
    summary: dict[str, Any],
    targets_report: dict[str, Any] | None,
) -> None:
    """Store quality flags per persona (one UPDATE per flagged/cleared row) and the task's summaries."""
    for result_id, entry in per_persona.items():
        session.execute(
            sa.update(GenerationResult)
            .where(GenerationResult.id == result_id, GenerationResult.task_id == task.id)
            .values(quality=entry, quality_flags=sorted(entry.get("flags", [])) or None)
            .execution_options(synchronize_session=False)
        )
    task.quality_summary = summary
    task.targets_report = targets_report
