"""Curation writes: one persona's favourite, tags and rating, and a curation applied to a whole view.

A write changes only the columns it names, on the row as it is when the statement runs, so what someone else
changed meanwhile is kept: one persona's save reads its row locked (``gallery_curation_for_update``) and writes the
differences, and a tag applied to a view is one statement (``gallery_add_tag``).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from db.models import GenerationResult, GenerationTask, utcnow
from db.queries.gallery.criteria import (
    PersonaCriteria,
    dialect,
    joined,
    lower_text,
    safe_tags,
    tag_values,
    visible_tasks,
    where_clauses,
)

__all__ = [
    "gallery_add_tag",
    "gallery_bulk_update",
    "gallery_count_full_without_tag",
    "gallery_curation_for_update",
    "gallery_update_persona",
]

R = GenerationResult
T = GenerationTask


def gallery_curation_for_update(session: Session, viewer_id: int | None, result_id: int) -> dict[str, Any] | None:
    """One visible persona's ``favorite``, ``tags`` (a list of texts) and ``rating``, its row locked until the
    transaction ends (PostgreSQL: ``FOR UPDATE``; on SQLite the write transaction already excludes every other
    writer); None when it does not exist or is not visible."""
    row = session.execute(
        sa.select(R.favorite, R.tags, R.rating)
        .where(R.id == result_id, R.task_id.in_(sa.select(T.id).where(visible_tasks(viewer_id))))
        .with_for_update()
    ).first()
    if row is None:
        return None
    tags = row.tags if isinstance(row.tags, list) else []
    return {"favorite": bool(row.favorite), "tags": [t for t in tags if isinstance(t, str)], "rating": row.rating}


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


def _has_tag(session: Session, tag: str) -> sa.ColumnElement[bool]:
    """The persona's tags hold ``tag``, ignoring case."""
    elements = tag_values(session, R.tags)
    same = lower_text(session, elements.c.value) == lower_text(session, sa.literal(tag, sa.Text))
    return sa.exists(sa.select(sa.literal(1)).select_from(elements).where(same))


def _tag_count(session: Session) -> sa.ColumnElement[Any]:
    length = sa.func.jsonb_array_length if dialect(session) == "postgresql" else sa.func.json_array_length
    return length(safe_tags(session, R.tags))


def _with_tag(session: Session, tag: str) -> sa.ColumnElement[Any]:
    """The persona's tags with ``tag`` appended."""
    if dialect(session) == "postgresql":
        return safe_tags(session, R.tags).op("||")(sa.func.jsonb_build_array(sa.cast(sa.literal(tag), sa.Text)))
    return sa.func.json_insert(safe_tags(session, R.tags), "$[#]", sa.literal(tag, sa.Text))


def gallery_count_full_without_tag(session: Session, c: PersonaCriteria, tag: str, *, max_tags: int) -> int:
    """How many personas of the view lack ``tag`` (ignoring case) and hold ``max_tags`` tags already."""
    query = (
        sa.select(sa.func.count())
        .select_from(R)
        .where(*where_clauses(session, c), ~_has_tag(session, tag), _tag_count(session) >= max_tags)
    )
    return int(session.scalar(query) or 0)


def gallery_add_tag(session: Session, c: PersonaCriteria, tag: str, *, max_tags: int) -> int:
    """Append ``tag`` to every persona of the view that lacks it (ignoring case) and holds fewer than ``max_tags``
    tags, in one statement: each row's tags are read as the update finds them, so a concurrent edit is kept.
    Returns how many personas were tagged."""
    ids = joined(sa.select(R.id)).where(*where_clauses(session, c)).scalar_subquery()
    result = session.execute(
        sa.update(R)
        .where(R.id.in_(ids), ~_has_tag(session, tag), _tag_count(session) < max_tags)
        .values(tags=_with_tag(session, tag), updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)
