"""What the gallery shows: how many personas match, one sorted page of them, and one persona in full."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from db.models import GenerationResult, GenerationTask
from db.queries.gallery.criteria import (
    GALLERY_PERSONA_FIELDS,
    Col,
    PersonaCriteria,
    joined,
    visible_tasks,
    where_clauses,
)

__all__ = ["GALLERY_SORT_COLUMNS", "gallery_count", "gallery_page", "gallery_persona"]

R = GenerationResult
T = GenerationTask
GALLERY_SORT_COLUMNS: tuple[str, ...] = ("batch_number", "created_at", "lastname", "age", "rating", "updated_at")


def _row_columns() -> list[sa.ColumnElement[Any]]:
    thumb = R.image_meta[("images", 0, "thumb_key")].as_string()
    return [
        R.id,
        T.task_id.label("task_id"),
        R.batch_number,
        R.slot,
        R.status,
        R.error,
        R.favorite,
        R.tags,
        R.rating,
        R.curation,
        R.quality_flags,
        R.image_count,
        R.base_image_url,
        thumb.label("thumb_key"),
        T.bio_language.label("language"),
        R.created_at,
        R.updated_at,
        *(getattr(R, name) for name in GALLERY_PERSONA_FIELDS),
    ]


def order_by(sort_column: str, descending: bool, nulls: bool = True) -> list[sa.ColumnElement[Any]]:
    """The ORDER BY of a sort column, ending with the persona id so paging is stable. ``nulls=False``: the
    filter excludes NULLs of an age/rating sort, so no NULLs-last key is needed (a plain ``age DESC, id DESC``)."""

    def direction(col: Col) -> sa.ColumnElement[Any]:
        return col.desc() if descending else col.asc()

    if sort_column == "created_at":
        keys: list[Col] = [R.created_at, R.id]
    elif sort_column == "updated_at":
        keys = [R.updated_at, R.id]
    elif sort_column == "lastname":
        keys = [sa.func.lower(R.lastname), sa.func.lower(R.firstname), R.id]
    elif sort_column in ("age", "rating"):
        col = getattr(R, sort_column)
        # NULLs last in both directions, identically on SQLite and PostgreSQL.
        first = [sa.case((col.is_(None), 1), else_=0).asc()] if nulls else []
        return [*first, direction(col), direction(R.id)]
    else:  # batch_number: the generation order
        keys = [R.task_id, R.batch_number, R.slot, R.id]
    return [direction(k) for k in keys]


def _with_thumb(row: Mapping[Any, Any]) -> dict[str, Any]:
    data = dict(row)
    data["tags"] = list(data.get("tags") or [])
    data["quality_flags"] = list(data.get("quality_flags") or [])
    data["thumb_uri"] = data.pop("thumb_key", None) or data.get("base_image_url")
    return data


def _excludes_nulls(c: PersonaCriteria, sort_column: str) -> bool:
    """Whether a bound on the sort column already excludes its unset values."""
    return any(cond.test in ("min", "max") and cond.column == sort_column for cond in c.conditions)


def gallery_count(session: Session, c: PersonaCriteria) -> int:
    """How many personas match (on generation_results alone: ``where_clauses`` needs no join)."""
    return int(session.scalar(sa.select(sa.func.count()).select_from(R).where(*where_clauses(session, c))) or 0)


def gallery_page(
    session: Session, c: PersonaCriteria, *, sort_column: str, descending: bool, offset: int, limit: int
) -> list[dict[str, Any]]:
    """One page of persona rows (no bios trimmed, no image lists: ``thumb_uri`` is the first thumbnail)."""
    query = (
        joined(sa.select(*_row_columns()))
        .where(*where_clauses(session, c))
        .order_by(*order_by(sort_column, descending, nulls=not _excludes_nulls(c, sort_column)))
        .offset(max(0, offset))
        .limit(max(1, limit))
    )
    return [_with_thumb(row._mapping) for row in session.execute(query)]


def gallery_persona(session: Session, viewer_id: int | None, result_id: int) -> dict[str, Any] | None:
    """Every field of one persona with its images and task (no config snapshot); None if not visible."""
    query = joined(
        sa.select(
            R,
            T.task_id.label("task_code"),
            T.persona_description,
            T.bio_language,
            T.status.label("task_status"),
            T.created_at.label("task_created_at"),
            T.number_to_generate,
            T.images_per_persona,
            T.seed,
            T.user_id,
        )
    ).where(R.id == result_id, visible_tasks(viewer_id))
    row = session.execute(query).first()
    if row is None:
        return None
    result: GenerationResult = row[0]
    data: dict[str, Any] = {name: getattr(result, name) for name in GALLERY_PERSONA_FIELDS}
    meta = result.image_meta or {}
    thumbs = [m.get("thumb_key") for m in meta.get("images", []) if isinstance(m, dict)]
    data.update(
        id=result.id,
        task_id=row.task_code,
        batch_number=result.batch_number,
        slot=result.slot,
        status=result.status,
        error=result.error,
        attempts=result.attempts,
        favorite=bool(result.favorite),
        tags=list(result.tags or []),
        rating=result.rating,
        curation=result.curation,
        quality=result.quality,
        quality_flags=list(result.quality_flags or []),
        image_count=result.image_count,
        base_image_url=result.base_image_url,
        images=list(result.images or []),
        image_meta=meta,
        thumb_uri=(thumbs[0] if thumbs and thumbs[0] else None) or result.base_image_url,
        language=row.bio_language,
        created_at=result.created_at,
        updated_at=result.updated_at,
        task={
            "task_id": row.task_code,
            "description": row.persona_description,
            "language": row.bio_language,
            "status": row.task_status,
            "created_at": row.task_created_at,
            "number_to_generate": row.number_to_generate,
            "images_per_persona": row.images_per_persona,
            "seed": row.seed,
            "user_id": row.user_id,
        },
    )
    return data
