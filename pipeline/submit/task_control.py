"""A task after it is submitted: its status, the tasks list with progress, cancel, retry, delete, re-run, and
resuming a task held at upgrade.

Each function takes the acting user (None from the CLI, which sees every task); to a user who is not an
administrator, other users' tasks look like missing ones.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import db.queries as q
from db.models import GenerationTask, TaskStatus, User, utcnow
from db.session import Database
from pipeline.core.config import Settings
from pipeline.core.domain import TaskSpec
from pipeline.core.errors import AccessDenied, ConflictError, NotFoundError, PipelineError, ValidationError
from pipeline.core.identity import snapshot as identity_snapshot
from pipeline.core.keys import task_prefix
from pipeline.core.usage import format_money
from pipeline.storage import Storage
from pipeline.submit.submission import build_snapshot, submit_task

log = logging.getLogger(__name__)

HELD_EXPLANATION = ("left running by the previous version; resuming will call the configured providers and may "
                    "cost money")


def _visible_task(session: Any, task_id: str, actor: User | None, *, lock: bool = False) -> GenerationTask:
    """The task if the actor may see it (``lock``: row-locked on PostgreSQL). Other users' tasks look like missing
    ones (no id probing)."""
    task = q.get_task(session, task_id, for_update=lock)
    if task is None or (actor is not None and not actor.is_admin and task.user_id != actor.id):
        raise NotFoundError(f"no task {task_id!r}")
    return task


@dataclass(frozen=True)
class TaskStatusReport:
    """One task's request, state and progress, as ``status`` prints it (``as_json`` for scripts)."""

    task_id: str
    status: str
    owner: str
    description: str
    language: str
    number_to_generate: int
    images_per_persona: int
    seed: int | None
    personas_stored: int
    personas_done: int
    personas_failed: int
    images_done: int
    error_log: str | None
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    attempts: int
    cancel_requested: bool
    config_snapshot: dict[str, Any] | None
    targets: dict[str, Any] | None = None
    targets_report: dict[str, Any] | None = None
    quality_summary: dict[str, Any] | None = None

    def as_json(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        for key in ("created_at", "started_at", "completed_at"):
            value = data[key]
            data[key] = value.isoformat() if value else None
        return data


def task_status(db: Database, task_id: str, actor: User | None = None) -> TaskStatusReport:
    """The task's status report; ``NotFoundError`` when it does not exist or the actor may not see it."""
    with db.session() as session:
        task = _visible_task(session, task_id, actor)
        owner = q.get_user(session, task.user_id)
        progress = q.task_progress(session, [task.id]).get(task.id, q.Progress())
    return TaskStatusReport(
        task_id=task.task_id,
        status=task.status,
        owner=owner.email if owner else "?",
        description=task.persona_description,
        language=task.bio_language,
        number_to_generate=task.number_to_generate,
        images_per_persona=task.images_per_persona,
        seed=task.seed,
        personas_stored=progress.personas_total,
        personas_done=progress.personas_done,
        personas_failed=progress.personas_failed,
        images_done=progress.images_done,
        error_log=task.error_log,
        created_at=task.created_at,
        started_at=task.started_at,
        completed_at=task.completed_at,
        attempts=task.attempts,
        cancel_requested=task.cancel_requested,
        config_snapshot=task.config_snapshot,
        targets=task.targets,
        targets_report=task.targets_report,
        quality_summary=task.quality_summary,
    )


def cancel_task(db: Database, task_id: str, actor: User | None = None) -> str:
    """Cancel a task: at once if no worker holds it, else between two units of work (within seconds)."""
    with db.transaction(immediate=True) as session:
        task = _visible_task(session, task_id, actor)
        if task.status in TaskStatus.finished():
            raise ConflictError(f"task {task_id} is already {task.status}")
        return q.request_cancel(session, task)


def retry_task(db: Database, task_id: str, actor: User | None = None, *, budget: float | None = None) -> int:
    """Re-run only what failed (failed personas, missing personas, missing images). Returns personas reset.

    ``budget`` (dollars, from ``parse_budget``; None keeps the task's) replaces the task's budget: a task that
    stopped at its budget goes on with a higher one. It must be more than the task has spent over all its runs."""
    with db.transaction(immediate=True) as session:
        task = _visible_task(session, task_id, actor)
        if task.status not in (TaskStatus.PARTIAL.value, TaskStatus.FAILED.value, TaskStatus.CANCELLED.value):
            raise ConflictError(f"task {task_id} is {task.status}: only partial, failed or cancelled tasks can be retried")
        if not task.config_snapshot:  # it would run with empty bio prompts
            raise ConflictError(f"task {task_id} has no frozen config to retry (a legacy task): submit it anew")
        if budget is not None:
            spent = q.task_spend(session, task.id).spent
            if budget <= spent:
                raise ValidationError(f"task {task_id} has spent {format_money(spent)} already: its new budget must "
                                      f"be more than that, got {format_money(budget)}")
        return q.reset_task_for_retry(session, task, budget=budget)


def resume_task(db: Database, settings: Settings, task_id: str, actor: User | None = None) -> str:
    """Make a held task (left unfinished by the previous version) claimable; administrators only, since it calls
    the configured providers. Its bio prompts, toggles and identity-check mode are those frozen at upgrade; the
    providers and models are this process's (those that will be called). Returns the new status."""
    if actor is not None and not actor.is_admin:
        raise AccessDenied("only administrators can resume a held task: it calls the providers and may cost money")
    current = build_snapshot(db, settings)
    with db.transaction(immediate=True) as session:
        task = _visible_task(session, task_id, actor)
        if task.status != TaskStatus.HELD.value:
            raise ConflictError(f"task {task_id} is {task.status}: only held tasks can be resumed")
        q.resume_held_task(session, task, complete_held_snapshot(task.config_snapshot or {}, current))
        status = task.status
    log.info("held task %s resumed", task_id)
    return status


def complete_held_snapshot(frozen: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """A held task's configuration as it runs: what the upgrade froze (prompts, toggles, identity mode, when)
    over this process's snapshot (app version, providers, models, base prompt), with the identity check resolved
    for the image provider that will be called."""
    snapshot = {**current, **frozen}
    mode = (frozen.get("identity") or {}).get("mode")
    snapshot["identity"] = identity_snapshot(mode, current["providers"]["image"])
    snapshot["resumed_at"] = utcnow().isoformat()
    return snapshot


def delete_task(db: Database, storage: Storage, task_id: str, actor: User | None = None) -> int:
    """Delete a task's rows and stored objects. Refused while a worker holds it (cancel first).

    The task row is locked while its lease is read and the rows go, so no worker claims it in between. The
    objects are removed after the rows; a storage cleanup recorded with the rows makes sure they go even when
    the storage fails now (a worker retries it: ``pipeline.worker.cleanups``)."""
    prefix = task_prefix(task_id)
    with db.transaction(immediate=True) as session:
        task = _visible_task(session, task_id, actor, lock=True)
        if task.lease_expires_at is not None and task.lease_expires_at > utcnow():
            raise ConflictError(f"task {task_id} is running: cancel it first, then delete it")
        q.delete_task_row(session, task)
        cleanup_id = q.add_storage_cleanup(session, prefix, f"task {task_id} deleted", utcnow()).id
    try:
        removed = storage.delete_prefix(prefix)
    except (PipelineError, OSError) as exc:
        log.warning("task %s deleted, but its stored objects could not be removed yet (%s): a worker retries", task_id,
                    exc)
        with db.transaction() as session:
            q.note_storage_cleanup_failure(session, cleanup_id, str(exc), utcnow(), retry_after=timedelta(0))
        return 0
    with db.transaction() as session:
        q.remove_storage_cleanup(session, cleanup_id)
    log.info("task %s deleted with %d stored objects", task_id, removed)
    return removed


def rerun_task(db: Database, task_id: str, actor: User, *, same_seed: bool = True) -> str:
    """A new pending task with the same request and frozen config (same seed, or a new one)."""
    with db.session() as session:
        task = _visible_task(session, task_id, actor)
        if task.status == TaskStatus.HELD.value:  # its configuration is completed only when it is resumed
            raise ConflictError(f"task {task_id} is held: an administrator resumes or cancels it first")
        spec = TaskSpec(
            user_id=actor.id,
            description=task.persona_description,
            language=task.bio_language,
            count=task.number_to_generate,
            images_per_persona=task.images_per_persona,
            seed=task.seed if same_seed else None,
            targets=task.targets,
        )
        snapshot = dict(task.config_snapshot or {})
        budget = task.budget  # the same budget, spent anew by the new task
    if not snapshot:
        raise ConflictError(f"task {task_id} has no frozen config to re-run (a legacy task): submit it anew")
    snapshot["rerun_of"] = task_id
    new_id = submit_task(db, spec, snapshot, budget=budget)
    with db.transaction() as session:
        new_task = q.get_task(session, new_id)
        if new_task is not None:
            new_task.rerun_of = task_id
    return new_id


def list_tasks(db: Database, actor: User, *, limit: int = 200) -> list[q.TaskRow]:
    """The tasks page's rows with progress, in two queries whatever the count: own tasks, or all for admins."""
    with db.session() as session:
        return q.list_task_rows(session, user_id=None if actor.is_admin else actor.id, limit=limit)


def eta_seconds(row: q.TaskRow, now: datetime | None = None) -> float | None:
    """Remaining time from the pace so far (images done since the start), or None before there is a pace."""
    task, progress = row.task, row.progress
    if task.started_at is None or task.status in TaskStatus.finished():
        return None
    total_images = task.number_to_generate * task.images_per_persona
    done = progress.images_done
    if done <= 0 or done >= total_images:
        return None
    elapsed = ((now or utcnow()) - task.started_at).total_seconds()
    return max(0.0, elapsed / done * (total_images - done))
