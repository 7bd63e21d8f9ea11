"""Queries of the identity check: which personas still need analysing, and storing an analysis."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from db.models import GenerationResult, PersonaStatus
from db.queries.results import persona_ids

__all__ = ["completed_persona_ids", "set_identity"]


def completed_persona_ids(session: Session, task_pk: int) -> list[int]:
    return persona_ids(session, task_pk, PersonaStatus.COMPLETED.value)


def set_identity(session: Session, result: GenerationResult, record: dict[str, Any]) -> None:
    """Store a persona's identity analysis in ``image_meta['identity']`` (a new dict: the JSON column sees it)."""
    result.image_meta = {**(result.image_meta or {}), "identity": record}
