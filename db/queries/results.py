"""Queries on ``generation_results`` used by the executor (the gallery's live in ``gallery``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from db.models import GenerationResult, PersonaStatus, utcnow

__all__ = [
    "append_images",
    "batch_exists",
    "count_personas",
    "existing_names",
    "failed_personas",
    "get_result",
    "insert_personas",
    "list_results",
    "mark_persona",
    "max_batch_number",
    "pending_persona_ids",
    "persona_ids",
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
    """Insert one batch's personas (slots 0..n-1), pending their images. The unique (task, batch, slot) rule
    rejects a batch inserted twice."""
    now = utcnow()
    rows = [
        {**persona, "task_id": task_pk, "batch_number": batch_number, "slot": slot,
         "status": PersonaStatus.PENDING.value, "created_at": now, "updated_at": now}
        for slot, persona in enumerate(personas)
    ]
    if rows:
        session.execute(sa.insert(GenerationResult), rows)
    return len(rows)


def persona_ids(session: Session, task_pk: int, status: str) -> list[int]:
    """The ids of a task's personas with ``status``, in generation order."""
    return list(
        session.scalars(
            sa.select(GenerationResult.id)
            .where(GenerationResult.task_id == task_pk, GenerationResult.status == status)
            .order_by(GenerationResult.batch_number, GenerationResult.slot, GenerationResult.id)
        )
    )


def pending_persona_ids(session: Session, task_pk: int) -> list[int]:
    return persona_ids(session, task_pk, PersonaStatus.PENDING.value)


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


def failed_personas(session: Session, task_pk: int) -> list[sa.Row[Any]]:
    """The failed personas of a task, in order: (firstname, lastname, batch_number, slot, error)."""
    r = GenerationResult
    return list(session.execute(
        sa.select(r.firstname, r.lastname, r.batch_number, r.slot, r.error)
        .where(r.task_id == task_pk, r.status == PersonaStatus.FAILED.value)
        .order_by(r.batch_number, r.slot, r.id)
    ))


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
    """Store each persona's quality entry and flags (``per_persona`` by result id, the task's personas) and the
    task's summaries."""
    if per_persona:
        session.execute(  # an UPDATE by primary key for each row
            sa.update(GenerationResult),
            [{"id": result_id, "quality": entry, "quality_flags": sorted(entry.get("flags", [])) or None}
             for result_id, entry in per_persona.items()],
        )
    task.quality_summary = summary
    task.targets_report = targets_report
