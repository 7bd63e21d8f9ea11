"""The tasks a gallery view spans: which ones a viewer may pick, and what the chosen ones are."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from db.models import GenerationResult, GenerationTask, User
from db.queries.gallery.criteria import PersonaCriteria, condition_sql, visible_tasks

__all__ = ["gallery_task_choices", "gallery_tasks_info", "gallery_visible_task_ids"]

R = GenerationResult
T = GenerationTask


def gallery_visible_task_ids(session: Session, viewer_id: int | None, task_ids: Sequence[str]) -> set[str]:
    """Which of ``task_ids`` exist and are visible to ``viewer_id`` (``None``: any owner)."""
    if not task_ids:
        return set()
    query = sa.select(T.task_id).where(T.task_id.in_(list(task_ids)), visible_tasks(viewer_id))
    return set(session.scalars(query))


def gallery_task_choices(
    session: Session, viewer_id: int | None, *, clip: int = 80, limit: int = 1000
) -> list[dict[str, Any]]:
    """Tasks a viewer may browse, newest first, with their persona counts (two tables, one query)."""
    counts = sa.select(R.task_id.label("pk"), sa.func.count().label("n")).group_by(R.task_id).subquery()
    query = (
        sa.select(
            T.task_id,
            sa.func.substr(T.persona_description, 1, clip + 1).label("description"),
            T.status,
            T.created_at,
            T.bio_language,
            T.number_to_generate,
            T.images_per_persona,
            User.email,
            sa.func.coalesce(counts.c.n, 0).label("n"),
        )
        .join(User, User.id == T.user_id)
        .outerjoin(counts, counts.c.pk == T.id)
        .where(visible_tasks(viewer_id))
        .order_by(T.created_at.desc(), T.id.desc())
        .limit(limit)
    )
    out = []
    for row in session.execute(query):
        description = " ".join((row.description or "").split())
        if len(description) > clip:
            description = description[: clip - 1].rstrip() + "…"
        out.append(
            {
                "task_id": row.task_id,
                "description": description,
                "status": row.status,
                "created_at": row.created_at,
                "language": row.bio_language,
                "number_to_generate": row.number_to_generate,
                "images_per_persona": row.images_per_persona,
                "owner": row.email,
                "count": int(row.n),
                "personas": int(row.n),  # the same number, under the name the pages read
            }
        )
    return out


def gallery_tasks_info(session: Session, c: PersonaCriteria) -> list[dict[str, Any]]:
    """The tasks a filter spans (owner, explicit ids and conditions on task columns only), with their config
    snapshots."""
    conds: list[sa.ColumnElement[bool]] = [visible_tasks(c.viewer_id)]
    if c.task_ids:
        conds.append(T.task_id.in_(c.task_ids))
    conds += [condition_sql(session, cond) for cond in c.conditions if cond.column.startswith("task.")]
    query = (
        sa.select(
            T.task_id,
            T.persona_description,
            T.bio_language,
            T.number_to_generate,
            T.images_per_persona,
            T.seed,
            T.status,
            T.created_at,
            T.completed_at,
            T.rerun_of,
            T.config_snapshot,
            T.started_at,
            T.attempts,
            T.error_log,
            T.targets,
            T.targets_report,
            T.quality_summary,
            T.diversity,
        )
        .where(*conds)
        .order_by(T.created_at, T.id)
    )
    return [dict(row._mapping) for row in session.execute(query)]
