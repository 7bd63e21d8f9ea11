"""Curation writes: one persona's favourite, tags and rating, and a curation applied to a whole view."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from db.models import GenerationResult, GenerationTask, utcnow
from db.queries.gallery.criteria import PersonaCriteria, joined, visible_tasks, where_clauses

__all__ = ["gallery_bulk_update", "gallery_ids_and_tags", "gallery_update_persona", "set_persona_tags"]

R = GenerationResult
T = GenerationTask


def gallery_update_persona(session: Session, viewer_id: int | None, result_id: int, **values: Any) -> bool:
    """Set curation columns of one visible persona; False when it does not exist or is not visible."""
    visible = sa.select(T.id).where(visible_tasks(viewer_id))
    result = session.execute(
        sa.update(R)
        .where(R.id == result_id, R.task_id.in_(visible))
        .values(**values, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


def gallery_bulk_update(session: Session, c: PersonaCriteria, **values: Any) -> int:
    """Set curation columns (favorite, curation) on every persona of the filtered view; returns how many."""
    ids = joined(sa.select(R.id)).where(*where_clauses(session, c)).scalar_subquery()
    result = session.execute(
        sa.update(R).where(R.id.in_(ids)).values(**values, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def gallery_ids_and_tags(session: Session, c: PersonaCriteria) -> list[tuple[int, list[str]]]:
    rows = session.execute(joined(sa.select(R.id, R.tags)).where(*where_clauses(session, c)).order_by(R.id))
    return [(int(i), list(t) if isinstance(t, list) else []) for i, t in rows]


def set_persona_tags(session: Session, result_id: int, tags: list[str]) -> None:
    session.execute(sa.update(R).where(R.id == result_id).values(tags=tags, updated_at=utcnow())
                    .execution_options(synchronize_session=False))
