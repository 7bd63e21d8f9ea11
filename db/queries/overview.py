"""Queries of the overview page: tasks by status, personas and images made since a moment, a daily series,
recent failures, quality flags and a per-user breakdown. ``viewer_id`` restricts every count to one user's tasks
(``None``: every user's, for administrators). Each is one grouped statement, whatever the data's size."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from db.models import GenerationResult, GenerationTask, TaskStatus, User

__all__ = [
    "overview_daily",
    "overview_flag_counts",
    "overview_made_since",
    "overview_per_user",
    "overview_recent_failures",
    "overview_status_counts",
]

R = GenerationResult
T = GenerationTask
FAILED_STATUSES = (TaskStatus.FAILED.value, TaskStatus.PARTIAL.value)


def _own(viewer_id: int | None) -> sa.ColumnElement[bool]:
    return sa.true() if viewer_id is None else T.user_id == viewer_id


def overview_status_counts(session: Session, viewer_id: int | None) -> dict[str, int]:
    """How many tasks have each status."""
    query = sa.select(T.status, sa.func.count()).where(_own(viewer_id)).group_by(T.status)
    return {status: int(n) for status, n in session.execute(query)}


def overview_made_since(session: Session, viewer_id: int | None, since: datetime | None) -> tuple[int, int]:
    """Personas stored and images made since ``since`` (``None``: ever), by the persona's creation time."""
    query = (
        sa.select(sa.func.count(R.id), sa.func.coalesce(sa.func.sum(R.image_count), 0))
        .select_from(R)
        .join(T, T.id == R.task_id)
        .where(_own(viewer_id))
    )
    if since is not None:
        query = query.where(R.created_at >= since)
    personas, images = session.execute(query).one()
    return int(personas), int(images)


def overview_daily(session: Session, viewer_id: int | None, since: datetime) -> list[tuple[date, int, int]]:
    """Per day (UTC) since ``since``, the personas stored and their images; days without any are left out."""
    day = sa.func.date(R.created_at)
    query = (
        sa.select(day.label("day"), sa.func.count(R.id), sa.func.coalesce(sa.func.sum(R.image_count), 0))
        .select_from(R)
        .join(T, T.id == R.task_id)
        .where(_own(viewer_id), R.created_at >= since)
        .group_by(day)
        .order_by(day)
    )
    out = []
    for value, personas, images in session.execute(query):
        # SQLite's date() gives text, PostgreSQL's a date
        out.append((value if isinstance(value, date) else date.fromisoformat(str(value)), int(personas), int(images)))
    return out


def overview_recent_failures(session: Session, viewer_id: int | None, limit: int = 10) -> list[dict[str, Any]]:
    """The latest failed or partial tasks, newest first: task_id, status, owner, when, description, error log."""
    query = (
        sa.select(T.task_id, T.status, User.email, T.completed_at, T.updated_at, T.persona_description, T.error_log)
        .join(User, User.id == T.user_id)
        .where(_own(viewer_id), T.status.in_(FAILED_STATUSES))
        .order_by(sa.func.coalesce(T.completed_at, T.updated_at).desc(), T.id.desc())
        .limit(limit)
    )
    return [
        {"task_id": r.task_id, "status": r.status, "owner": r.email, "when": r.completed_at or r.updated_at,
         "description": r.persona_description, "error_log": r.error_log}
        for r in session.execute(query)
    ]


def overview_flag_counts(session: Session, viewer_id: int | None) -> tuple[int, int, dict[str, int]]:
    """Personas reviewed (of finished tasks), how many of them any check flagged, and how many each flag did.
    Flags are counted in Python from the flagged rows only (a JSON array per row, read once)."""
    finished = sa.and_(_own(viewer_id), T.status.in_(TaskStatus.finished()))
    base = sa.select(sa.func.count(R.id)).select_from(R).join(T, T.id == R.task_id).where(finished)
    reviewed = int(session.scalar(base) or 0)
    flags: dict[str, int] = {}
    flagged = 0
    rows = session.execute(
        sa.select(R.quality_flags).join(T, T.id == R.task_id).where(finished, R.quality_flags.is_not(None))
    )
    for (values,) in rows:
        if isinstance(values, list) and values:
            flagged += 1
            for flag in set(values):
                flags[str(flag)] = flags.get(str(flag), 0) + 1
    return reviewed, flagged, dict(sorted(flags.items(), key=lambda item: (-item[1], item[0])))


def overview_per_user(session: Session, since: datetime) -> list[dict[str, Any]]:
    """Every user with tasks: e-mail, tasks, unfinished tasks (pending or in progress), failed or partial tasks, personas and images (all time and since
    ``since``), most personas first."""
    in_progress = sa.func.coalesce(sa.func.sum(sa.case((T.status.not_in(TaskStatus.finished()), 1), else_=0)), 0)
    failed = sa.func.coalesce(sa.func.sum(sa.case((T.status.in_(FAILED_STATUSES), 1), else_=0)), 0)
    tasks = (
        sa.select(T.user_id, sa.func.count(T.id).label("tasks"), in_progress.label("running"), failed.label("failed"))
        .group_by(T.user_id)
        .subquery()
    )
    recent = sa.case((R.created_at >= since, 1), else_=0)
    made = (
        sa.select(
            T.user_id,
            sa.func.count(R.id).label("personas"),
            sa.func.coalesce(sa.func.sum(R.image_count), 0).label("images"),
            sa.func.coalesce(sa.func.sum(recent), 0).label("personas_recent"),
            sa.func.coalesce(sa.func.sum(recent * R.image_count), 0).label("images_recent"),
        )
        .select_from(R)
        .join(T, T.id == R.task_id)
        .group_by(T.user_id)
        .subquery()
    )
    query = (
        sa.select(User.email, tasks.c.tasks, tasks.c.running, tasks.c.failed, made.c.personas, made.c.images,
                  made.c.personas_recent, made.c.images_recent)
        .join(tasks, tasks.c.user_id == User.id)
        .outerjoin(made, made.c.user_id == User.id)
    )
    out = [
        {"user": r.email, "tasks": int(r.tasks), "unfinished": int(r.running), "failed": int(r.failed),
         "personas": int(r.personas or 0), "images": int(r.images or 0),
         "personas_recent": int(r.personas_recent or 0), "images_recent": int(r.images_recent or 0)}
        for r in session.execute(query)
    ]
    return sorted(out, key=lambda row: (-row["personas"], row["user"]))
