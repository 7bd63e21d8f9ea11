"""Queries on ``generation_tasks``: insert, list with progress, the atomic claim, leases, cancel/retry/delete."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from db.models import GenerationResult, GenerationTask, PersonaStatus, Setting, TaskStatus, User, UTCDateTime, utcnow
from db.queries.results import (
    batch_exists,
    count_personas,
    existing_names,
    failed_personas,
    get_result,
    list_results,
    max_batch_number,
    pending_persona_ids,
)

__all__ = [
    "ERROR_LOG_MAX_LINES",
    "MAX_CONCURRENT_TASKS_KEY",
    "Progress",
    "TaskRow",
    "add_errors",
    "assert_lease",
    "claim_next_task",
    "claim_worthwhile",
    "count_held_tasks",
    "delete_task_row",
    "error_log_with",
    "finish_task",
    "get_task",
    "get_task_by_pk",
    "hand_back_task",
    "insert_task",
    "list_task_rows",
    "renew_leases",
    "request_cancel",
    "reset_task_for_retry",
    "runnable_task_exists",
    "set_task_status",
    "task_id_exists",
    "task_progress",
    "warm_task_reads",
]

MAX_CONCURRENT_TASKS_KEY = "max_concurrent_tasks"
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


def get_task(session: Session, task_id: str) -> GenerationTask | None:
    return session.scalar(sa.select(GenerationTask).where(GenerationTask.task_id == task_id))


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


# The claim's statements are built once (building a select per call costs more than running it on SQLite).
_TASKS = cast(sa.Table, GenerationTask.__table__)
_SETTINGS = cast(sa.Table, Setting.__table__)
_NOW = sa.bindparam("now", type_=UTCDateTime())
_CAP_VALUE = sa.select(_SETTINGS.c.value).where(_SETTINGS.c.key == MAX_CONCURRENT_TASKS_KEY)
_HELD_COUNT = (
    sa.select(sa.func.count())
    .select_from(_TASKS)
    .where(_TASKS.c.lease_expires_at > _NOW, _TASKS.c.status.in_([sa.literal(v) for v in IN_PROGRESS]))
)
# A task waiting for a worker: runnable, not cancelled, its lease (if any) expired.
_WAITING = (
    GenerationTask.status.in_([sa.literal(v) for v in TaskStatus.runnable()]),  # plain binds: no post-compile
    sa.or_(GenerationTask.lease_expires_at.is_(None), GenerationTask.lease_expires_at <= _NOW),
    GenerationTask.cancel_requested.is_(False),
)
_ANY_WAITING = sa.select(GenerationTask.id).where(*_WAITING).limit(1)
# The oldest waiting task, only while fewer than the cap hold a live lease (the count is an uncorrelated
# subquery: evaluated once, after the cap lock; at the cap no row is returned, so none is locked).
_CANDIDATE = (
    sa.select(GenerationTask)
    .where(*_WAITING, _HELD_COUNT.scalar_subquery() < sa.bindparam("cap", type_=sa.Integer()))
    .order_by(GenerationTask.created_at, GenerationTask.id)
    .limit(1)
)


@functools.cache
def _update_by_pk(names: tuple[str, ...]) -> sa.Update:
    return (
        sa.update(_TASKS)
        .where(_TASKS.c.id == sa.bindparam("pk", type_=sa.Integer()))
        .values({name: sa.bindparam(f"new_{name}", type_=_TASKS.c[name].type) for name in names})
    )


def _write_task(session: Session, task: GenerationTask, values: dict[str, Any]) -> None:
    """Set columns of a task's row at once (one Core UPDATE by primary key, no unit-of-work flush) and give the
    object the same values as committed state. An object this session does not hold is set the ORM way."""
    state = sa.inspect(task)
    if not state.persistent or state.session is not session:
        for name, value in values.items():
            setattr(task, name, value)
        return
    names = tuple(sorted(values))
    # on the session's connection: a plain Core statement needs none of the ORM's execution machinery (and no
    # autoflush: pending changes to other columns are flushed later as usual, those to these columns are dropped)
    session.connection().execute(
        _update_by_pk(names), {"pk": task.id, **{f"new_{name}": values[name] for name in names}}
    )
    for name, value in values.items():
        set_committed_value(task, name, value)  # also drops any unflushed change to these attributes


@functools.cache
def _claim_statements(dialect: str) -> tuple[sa.Select[Any], sa.Select[Any]]:
    """(cap row read, candidate select) for a dialect: PostgreSQL locks the cap row FOR UPDATE and takes the
    candidate FOR UPDATE SKIP LOCKED; SQLite's BEGIN IMMEDIATE already excludes every other writer."""
    if dialect == "postgresql":
        return _CAP_VALUE.with_for_update(), _CANDIDATE.with_for_update(skip_locked=True, of=GenerationTask)
    return _CAP_VALUE, _CANDIDATE


def _parse_cap(value: str) -> int:
    try:
        return max(0, int(value))
    except ValueError:
        return 1


def _lock_cap_row(session: Session, statement: sa.Select[Any] | None = None) -> int:
    """Lock the ``max_concurrent_tasks`` row (PostgreSQL FOR UPDATE) and read the cap live."""
    if statement is None:
        statement = _claim_statements(session.get_bind().dialect.name)[0]
    value = session.execute(statement).scalar()
    if value is None:  # a damaged database: recreate the seed's default row rather than running unbounded
        row = Setting(key=MAX_CONCURRENT_TASKS_KEY, value="1", created_at=utcnow(), updated_at=utcnow())
        session.add(row)
        session.flush()
        value = row.value
    return _parse_cap(value)


def count_held_tasks(session: Session, now: datetime) -> int:
    return session.execute(_HELD_COUNT, {"now": now}).scalar() or 0


def claim_worthwhile(session: Session, now: datetime) -> bool:
    """A read, without the claim's write lock: is a task waiting for a worker, and the cap not reached? A stale
    answer only shifts a claim by one poll: ``claim_next_task`` re-checks both under its lock. An unreadable cap
    answers yes (the claim then decides, as it always did)."""
    if session.execute(_ANY_WAITING, {"now": now}).scalar() is None:
        return False
    value = session.execute(_CAP_VALUE).scalar()
    try:
        limit = int(value) if value is not None else None
    except ValueError:
        return True
    return limit is None or count_held_tasks(session, now) < limit


def claim_next_task(
    session: Session, *, worker_id: str, now: datetime, lease_seconds: float, max_attempts: int
) -> GenerationTask | None:
    """Claim the oldest runnable task if fewer than the cap hold a live lease.

    Must run in one write transaction (``Database.transaction(immediate=True)``): on PostgreSQL the cap row is
    locked FOR UPDATE, so concurrent claims across processes and hosts serialise, and the candidate is taken
    with FOR UPDATE SKIP LOCKED; on SQLite BEGIN IMMEDIATE gives the same exclusion. A task that has been
    claimed ``max_attempts`` times (its workers keep dying) is failed instead of claimed again.

    Three statements: read (lock) the cap, select the candidate under the cap, update it by primary key (a Core
    statement whose values are computed here from the locked row, see ``_write_task``).
    """
    cap_statement, candidate_statement = _claim_statements(session.get_bind().dialect.name)
    cap = _lock_cap_row(session, cap_statement)
    # The lock may have been waited for: what counts (leases, started_at) is the moment it was acquired.
    now = max(now, utcnow())
    if cap <= 0:
        return None
    task = session.execute(candidate_statement, {"now": now, "cap": cap}).scalar()
    if task is None:
        return None
    if task.attempts >= max_attempts:
        _write_task(session, task, {
            "status": TaskStatus.FAILED.value,
            "error_log": error_log_with(task.error_log, [f"gave up after {task.attempts} attempts: the worker kept stopping"]),
            "completed_at": now,
            "lease_expires_at": None,
            "worker_id": None,
            "updated_at": now,
        })
        return None
    _write_task(session, task, {
        "worker_id": worker_id,
        "lease_expires_at": now + timedelta(seconds=lease_seconds),
        "heartbeat_at": now,
        "started_at": task.started_at or now,
        "attempts": task.attempts + 1,
        "updated_at": now,
        "status": TaskStatus.GENERATING_DATA.value if task.status == TaskStatus.PENDING.value else task.status,
    })
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
    """Record a final status with ``errors`` added to the error log, and release the lease (written at once, see
    ``_write_task``)."""
    now = now or utcnow()
    _write_task(session, task, {
        "status": status,
        "error_log": error_log_with(task.error_log, errors),
        "completed_at": now,
        "updated_at": now,
        "lease_expires_at": None,
        "worker_id": None,
        "cancel_requested": False,
    })


def hand_back_task(session: Session, task: GenerationTask) -> None:
    """Give up a held task's lease at once, its status kept: the next claim resumes it from what was committed."""
    _write_task(session, task, {"lease_expires_at": utcnow(), "worker_id": None})


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


def reset_task_for_retry(session: Session, task: GenerationTask, now: datetime | None = None) -> int:
    """Make failed personas pending again and the task runnable. Returns the number of personas reset."""
    now = now or utcnow()
    result = session.execute(
        sa.update(GenerationResult)
        .where(GenerationResult.task_id == task.id, GenerationResult.status == PersonaStatus.FAILED.value)
        .values(status=PersonaStatus.PENDING.value, error=None, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    task.status = TaskStatus.PENDING.value
    task.completed_at = None
    task.cancel_requested = False
    task.attempts = 0
    task.lease_expires_at = None
    task.worker_id = None
    task.updated_at = now
    return int(getattr(result, "rowcount", 0) or 0)


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


def warm_task_reads(session: Session) -> None:
    """The reads a task runs as it starts and ends, against a task that cannot exist (pk 0): a fresh process
    compiles them (and configures the ORM) before its first task instead of during it. Reads nothing."""
    none, now = 0, utcnow()
    get_task_by_pk(session, none)
    assert_lease(session, none, "", now)
    count_personas(session, none)
    max_batch_number(session, none)
    batch_exists(session, none, none)
    existing_names(session, none)
    pending_persona_ids(session, none)
    get_result(session, none)
    list_results(session, none)
    failed_personas(session, none)
    task_progress(session, [none])
