"""A task's request and configuration as the New-task form takes them: "Re-run with changes" starts from them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from db.models import User
from db.session import Database
from pipeline.submit.settings import TaskSettings, task_settings_of
from pipeline.submit.task_control import task_status


@dataclass(frozen=True)
class TaskForm:
    task_id: str
    description: str
    language: str
    count: int
    images_per_persona: int
    seed: int | None
    targets: dict[str, Any] | None
    settings: TaskSettings | None  # its toggles, identity mode, bio prompts; None without a frozen config (legacy)


def task_form(db: Database, task_id: str, actor: User) -> TaskForm:
    """The request and frozen settings of a task the actor owns (any task for an administrator); another user's
    task is ``NotFoundError``, as everywhere."""
    report = task_status(db, task_id, actor)
    return TaskForm(
        task_id=report.task_id,
        description=report.description,
        language=report.language,
        count=report.number_to_generate,
        images_per_persona=report.images_per_persona,
        seed=report.seed,
        targets=report.targets,
        settings=task_settings_of(report.config_snapshot) if report.config_snapshot else None,
    )
