"""The rows an export of a gallery view reads, streamed, and a version that says when a built file is stale."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from db.models import GenerationResult, GenerationTask
from db.queries.gallery.criteria import GALLERY_PERSONA_FIELDS, PersonaCriteria, joined, visible_tasks, where_clauses
from db.queries.gallery.page import order_by

__all__ = ["gallery_export_rows", "gallery_view_version"]

R = GenerationResult
T = GenerationTask


def gallery_view_version(session: Session, c: PersonaCriteria) -> str:
    """A text that changes when a persona of the view is added, removed or updated, or one of its tasks changes:
    a file built from the view is still current while this is the same."""
    personas = session.execute(
        sa.select(sa.func.count(), sa.func.max(R.updated_at), sa.func.max(R.id), sa.func.sum(R.id))
        .select_from(R)
        .where(*where_clauses(session, c))
    ).one()
    task_conds: list[sa.ColumnElement[bool]] = [visible_tasks(c.viewer_id)]
    if c.task_ids:
        task_conds.append(T.task_id.in_(c.task_ids))
    tasks = session.execute(
        sa.select(sa.func.count(), sa.func.max(T.updated_at), sa.func.sum(T.id)).where(*task_conds)
    ).one()
    return "|".join(str(value) for value in (*personas, *tasks))


def _export_columns() -> list[sa.ColumnElement[Any]]:
    """The export's columns under their export names (``pipeline.outputs.exports.EXPORT_COLUMNS``), nothing else."""
    return [
        T.task_id.label("task_id"),
        R.id.label("persona_id"),
        R.batch_number,
        R.slot,
        R.status,
        R.error,
        *(getattr(R, name) for name in GALLERY_PERSONA_FIELDS),
        T.bio_language.label("language"),
        R.favorite,
        R.tags,
        R.rating,
        R.image_count,
        R.curation,
        R.quality_flags,
        R.quality[("identity", "score")].as_float().label("identity_score"),
        R.quality[("identity", "worst")].as_float().label("identity_worst_distance"),
        R.quality[("identity", "base_faces")].as_integer().label("base_faces"),
        R.quality[("identity", "leakage_distance")].as_float().label("face_leakage_distance"),
        R.base_image_url.label("base_image"),
        R.images,
    ]


def gallery_export_rows(
    session: Session, c: PersonaCriteria, *, chunk: int = 500, with_meta: bool = True
) -> Iterator[dict[str, Any]]:
    """Every persona of the view in generation order, streamed ``chunk`` rows at a time (server-side cursor on
    PostgreSQL), as the export's columns (the identity check's scores read in SQL from ``quality``).
    ``with_meta`` adds the whole ``image_meta`` and ``quality`` documents (for the formats that carry images):
    decoding them is most of the cost of a table export."""
    meta = [R.image_meta, R.quality] if with_meta else []
    query = (
        joined(sa.select(*_export_columns(), *meta))
        .where(*where_clauses(session, c))
        .order_by(*order_by("batch_number", False))
    )
    # On the session's connection (Core rows, no ORM loading machinery per row), streamed.
    for row in session.connection().execution_options(yield_per=chunk).execute(query):
        data = dict(row._mapping)
        if with_meta:
            data["image_meta"] = data.get("image_meta") or {}
        yield data
