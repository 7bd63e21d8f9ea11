"""Queries on ``generation_tasks``: insert, list with progress, the atomic claim, leases, cancel/retry/delete."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from db.models import GenerationResult, GenerationTask, PersonaStatus, TaskStatus, User, utcnow
from db.queries.settings import read_max_concurrent_tasks

__all__ = [
    "ERROR_LOG_MAX_LINES",
    "Progress",
    "TaskRow",
    "add_errors",
    "assert_lease",
    "claim_next_task",
    "count_held_tasks",
    "count_waiting_tasks",
    "delete_task_row",
    "error_log_with",
    "finish_task",
    "get_task",
    "get_task_by_pk",
    "hand_back_task",
    "held_tasks_by_worker",
    "insert_task",
    "list_task_rows",
    "renew_leases",
    "request_cancel",
    "reset_task_for_retry",
    "resume_held_task",
    "runnable_task_exists",
    "set_task_status",
    "task_id_exists",
    "task_progress",
]

ERROR_LOG_MAX_LINES = 50
IN_PROGRESS = (TaskStatus.GENERATING_DATA.value, TaskStatus.DATA_GENERATED.value, TaskStatus.GENERATING_IMAGES.value)


@dataclass(frozen=True)
class Progress:
    personas_total: int = 0  # rows stored
    personas_done: int = 0  # rows with all their images
    personas_failed: int = 0
    images_done: int = 0


@dataclass(frozen=True)
class TaskRow:
    """A task as the tasks page and the CLI see it: the row, its owner's e-mail and its progress."""

    task: GenerationTask
    owner_email: str
    progress: Progress


def task_id_exists(session: Session, task_id: str) -> bool:
    return session.scalar(sa.select(GenerationTask.id).where(GenerationTask.task_id == task_id)) is not None


def insert_task(session: Session, **values: Any) -> GenerationTask:
    now = utcnow()
    task = GenerationTask(status=TaskStatus.PENDING.value, created_at=now, updated_at=now, **values)
    session.add(task)
    session.flush()
    return task


def get_task(session: Session, task_id: str, *, for_update: bool = False) -> GenerationTask | None:
    """The task ``task_id``; ``for_update``: row-locked on PostgreSQL until the transaction ends (a delete reads
    the lease and removes the row with no claim in between; SQLite's write transaction already excludes one)."""
    query = sa.select(GenerationTask).where(GenerationTask.task_id == task_id)
    if for_update and session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    return session.scalar(query)


def get_task_by_pk(session: Session, pk: int) -> GenerationTask | None:
    return session.get(GenerationTask, pk)


def _progress_query(task_pks: sa.ColumnElement[bool] | None = None) -> sa.Select[Any]:
    r = GenerationResult
    query = sa.select(
        r.task_id,
        sa.func.count(r.id),
        sa.func.coalesce(sa.func.sum(sa.case((r.status == PersonaStatus.COMPLETED.value, 1), else_=0)), 0),
        sa.func.coalesce(sa.func.sum(sa.case((r.status == PersonaStatus.FAILED.value, 1), else_=0)), 0),
        sa.func.coalesce(sa.func.sum(r.image_count), 0),
    ).group_by(r.task_id)
    if task_pks is not None:
        query = query.where(task_pks)
    return query


def task_progress(session: Session, task_pks: list[int]) -> dict[int, Progress]:
    """Progress of many tasks in one query (no N+1 on the tasks page)."""
    if not task_pks:
        return {}
    rows = session.execute(_progress_query(GenerationResult.task_id.in_(task_pks)))
    return {pk: Progress(int(total), int(done), int(failed), int(images)) for pk, total, done, failed, images in rows}


def list_task_rows(
    session: Session, *, user_id: int | None, limit: int = 200, statuses: tuple[str, ...] | None = None
) -> list[TaskRow]:
    """Newest first; ``user_id=None`` lists every user's tasks (admins). Two queries whatever the count."""
    query = (
        sa.select(GenerationTask, User.email)
        .join(User, User.id == GenerationTask.user_id)
        .order_by(GenerationTask.created_at.desc(), GenerationTask.id.desc())
        .limit(limit)
    )
    if user_id is not None:
        query = query.where(GenerationTask.user_id == user_id)
    if statuses:
        query = query.where(GenerationTask.status.in_(statuses))
    rows = session.execute(query).all()
    progress = task_progress(session, [task.id for task, _ in rows])
    return [TaskRow(task, email, progress.get(task.id, Progress())) for task, email in rows]


def _holds_a_live_lease(now: datetime) -> sa.ColumnElement[bool]:
    """A task that counts against the cap: in progress, under a lease that has not expired."""
    return sa.and_(GenerationTask.lease_expires_at > now, GenerationTask.status.in_(IN_PROGRESS))


def _waiting_for_a_worker(now: datetime) -> sa.ColumnElement[bool]:
    """A task a worker may claim now: runnable (never ``held``: that waits for an administrator), not cancelled,
    not held under a live lease (a task whose worker died has its lease expire, and is then resumed)."""
    return sa.and_(
        GenerationTask.status.in_(TaskStatus.runnable()),
        sa.or_(GenerationTask.lease_expires_at.is_(None), GenerationTask.lease_expires_at <= now),
        GenerationTask.cancel_requested.is_(False),
    )


def count_held_tasks(session: Session, now: datetime) -> int:
    """The tasks counting against ``max_concurrent_tasks`` now."""
    query = sa.select(sa.func.count()).select_from(GenerationTask).where(_holds_a_live_lease(now))
    return session.scalar(query) or 0


def held_tasks_by_worker(session: Session, now: datetime) -> dict[str, int]:
    """How many tasks each worker holds under a live lease."""
    query = (
        sa.select(GenerationTask.worker_id, sa.func.count())
        .where(_holds_a_live_lease(now))
        .group_by(GenerationTask.worker_id)
    )
    return {worker_id: int(n) for worker_id, n in session.execute(query) if worker_id is not None}


def count_waiting_tasks(session: Session, now: datetime) -> int:
    """The tasks a worker could claim now, whatever the cap."""
    query = sa.select(sa.func.count()).select_from(GenerationTask).where(_waiting_for_a_worker(now))
    return session.scalar(query) or 0


def claim_next_task(
    session: Session, *, worker_id: str, now: datetime, lease_seconds: float, max_attempts: int
) -> GenerationTask | None:
    """Claim the oldest waiting task if fewer than ``max_concurrent_tasks`` hold a live lease.

    Must run in one write transaction (``Database.transaction(immediate=True)``): on PostgreSQL the cap's settings
    row is locked FOR UPDATE, so claims from every process and host take turns, and the candidate is taken with
    FOR UPDATE SKIP LOCKED; on SQLite BEGIN IMMEDIATE gives the same exclusion. A task that has been claimed
    ``max_attempts`` times (its workers keep dying) is failed instead of claimed again. The claimed row is
    written (flushed) before this returns, so a further claim in the same transaction counts it.
    """
    cap = read_max_concurrent_tasks(session, lock=True)
    now = max(now, utcnow())  # the lock may have been waited for: leases count from the moment it was taken
    if count_held_tasks(session, now) >= cap:
        return None
    task = session.scalar(
        sa.select(GenerationTask)
        .where(_waiting_for_a_worker(now))
        .order_by(GenerationTask.created_at, GenerationTask.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    if task is None:
        return None
    if task.attempts >= max_attempts:
        message = f"gave up after {task.attempts} attempts: the worker kept stopping"
        finish_task(session, task, status=TaskStatus.FAILED.value, errors=[message], now=now)
        session.flush()
        return None
    task.worker_id = worker_id
    task.lease_expires_at = now + timedelta(seconds=lease_seconds)
    task.heartbeat_at = now
    task.started_at = task.started_at or now
    task.attempts += 1
    task.updated_at = now
    if task.status == TaskStatus.PENDING.value:
        task.status = TaskStatus.GENERATING_DATA.value
    session.flush()
    return task


def renew_leases(
    session: Session, *, worker_id: str, task_pks: list[int], now: datetime, lease_seconds: float
) -> tuple[set[int], set[int]]:
    """Extend this worker's leases. Returns (task pks still held, task pks whose cancel was requested)."""
    if not task_pks:
        return set(), set()
    t = GenerationTask
    session.execute(
        sa.update(t)
        .where(t.id.in_(task_pks), t.worker_id == worker_id, t.lease_expires_at > now)
        .values(lease_expires_at=now + timedelta(seconds=lease_seconds), heartbeat_at=now)
        .execution_options(synchronize_session=False)
    )
    rows = session.execute(
        sa.select(t.id, t.cancel_requested).where(
            t.id.in_(task_pks), t.worker_id == worker_id, t.lease_expires_at > now
        )
    ).all()
    return {pk for pk, _ in rows}, {pk for pk, cancel in rows if cancel}


def assert_lease(session: Session, task_pk: int, worker_id: str, now: datetime) -> GenerationTask | None:
    """The task row if ``worker_id`` still holds its lease (row-locked on PostgreSQL), else None."""
    query = sa.select(GenerationTask).where(
        GenerationTask.id == task_pk, GenerationTask.worker_id == worker_id, GenerationTask.lease_expires_at > now
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    return session.scalar(query)


def set_task_status(session: Session, task: GenerationTask, status: str, now: datetime | None = None) -> None:
    task.status = status
    task.updated_at = now or utcnow()


def finish_task(
    session: Session, task: GenerationTask, *, status: str, errors: Sequence[str] = (), now: datetime | None = None
) -> None:
    """Record a final status with ``errors`` added to the error log, and release the lease."""
    now = now or utcnow()
    task.status = status
    task.error_log = error_log_with(task.error_log, errors)
    task.completed_at = now
    task.updated_at = now
    task.lease_expires_at = None
    task.worker_id = None
    task.cancel_requested = False


def hand_back_task(session: Session, task: GenerationTask) -> None:
    """Give up a held task's lease at once, its status kept: the next claim resumes it from what was committed."""
    task.lease_expires_at = utcnow()
    task.worker_id = None


def request_cancel(session: Session, task: GenerationTask, now: datetime | None = None) -> str:
    """Cancel at once when no live worker holds the task; else flag it for the worker. Returns the new state."""
    now = now or utcnow()
    held = task.lease_expires_at is not None and task.lease_expires_at > now
    if held:
        task.cancel_requested = True
        task.updated_at = now
        return "cancel-requested"
    finish_task(session, task, status=TaskStatus.CANCELLED.value, errors=["cancelled"], now=now)
    return TaskStatus.CANCELLED.value


def _make_claimable(task: GenerationTask, now: datetime) -> None:
    """Pending, unleased, with its claims counted afresh: the next worker to poll may start it."""
    task.status = TaskStatus.PENDING.value
    task.completed_at = None
    task.cancel_requested = False
    task.attempts = 0
    task.lease_expires_at = None
    task.worker_id = None
    task.updated_at = now


def reset_task_for_retry(session: Session, task: GenerationTask, now: datetime | None = None, *,
                         budget: float | None = None) -> int:
    """Make failed personas pending again and the task runnable, with ``budget`` as its budget when one is given.
    Returns the number of personas reset."""
    now = now or utcnow()
    if budget is not None:
        task.budget = budget
    result = session.execute(
        sa.update(GenerationResult)
        .where(GenerationResult.task_id == task.id, GenerationResult.status == PersonaStatus.FAILED.value)
        .values(status=PersonaStatus.PENDING.value, error=None, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    _make_claimable(task, now)
    return int(getattr(result, "rowcount", 0) or 0)


def resume_held_task(
    session: Session, task: GenerationTask, snapshot: dict[str, Any], now: datetime | None = None
) -> None:
    """Make a held task claimable (pending) with its completed configuration; it resumes from what is stored."""
    now = now or utcnow()
    task.config_snapshot = snapshot
    _make_claimable(task, now)


def delete_task_row(session: Session, task: GenerationTask) -> None:
    session.execute(sa.delete(GenerationResult).where(GenerationResult.task_id == task.id))
    session.delete(task)


def error_log_with(log: str | None, lines: Sequence[str]) -> str | None:
    """A task's error log with ``lines`` added, bounded to ``ERROR_LOG_MAX_LINES`` (the one way it grows)."""
    all_lines = (log.splitlines() if log else []) + list(lines)
    if len(all_lines) > ERROR_LOG_MAX_LINES:
        all_lines = [*all_lines[:ERROR_LOG_MAX_LINES], f"... and {len(all_lines) - ERROR_LOG_MAX_LINES} more"]
    return "\n".join(all_lines) or None


def add_errors(session: Session, task: GenerationTask, lines: Sequence[str]) -> None:
    """Add problems to a running task's error log, visible at once on the tasks page."""
    task.error_log = error_log_with(task.error_log, lines)
    task.updated_at = utcnow()


def runnable_task_exists(session: Session, now: datetime) -> bool:
    """Any task a worker could claim now or later: pending, or in progress (its lease may yet expire,
    when its worker died, and then it must be resumed)."""
    t = GenerationTask
    query = sa.select(t.id).where(t.status.in_(TaskStatus.runnable()), t.cancel_requested.is_(False))
    return session.scalar(query.limit(1)) is not None

