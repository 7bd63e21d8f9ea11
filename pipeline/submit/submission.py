"""Task service: validate and submit, snapshot the config, cancel / retry / delete / re-run, status.

The UI and the CLI both call these functions; each check on input happens before anything is written.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import db.queries as q
from db.models import GenerationTask, TaskStatus, User, utcnow
from db.session import Database
from pipeline import __version__
from pipeline.core.config import Settings
from pipeline.core.domain import (
    ALLOWED_IMAGES_PER_PERSONA,
    BIO_PROMPT_KEYS,
    CONFIG_TOGGLES,
    IMAGES_PER_BLOCK,
    MAX_BATCHES_IN_FLIGHT,
    MAX_DESCRIPTION_CHARS,
    MAX_PERSONAS,
    MIN_PERSONAS,
    PERSONA_BATCH_SIZE,
    PersonaBatch,
    PersonaRequest,
    TaskSpec,
)
from pipeline.core.errors import AccessDenied, ConflictError, NotFoundError, ValidationError
from pipeline.core.identity import IDENTITY_SETTING_KEY
from pipeline.core.identity import snapshot as identity_snapshot
from pipeline.core.languages import normalise_language
from pipeline.core.targets import parse_targets
from pipeline.providers.registry import ProviderCache, check_provider_names
from pipeline.storage import Storage

log = logging.getLogger(__name__)

MAX_SEED = 2**63 - 1


def _as_int(value: object, what: str) -> int:
    if isinstance(value, bool):
        raise ValidationError(f"{what} must be a whole number, not {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    raise ValidationError(f"{what} must be a whole number, got {str(value)[:40]!r}")


def clean_description(description: object) -> str:
    """The description without control characters; ``ValidationError`` when empty or over the limit."""
    if not isinstance(description, str):
        raise ValidationError("description must be text")
    text = "".join(ch for ch in description if ch in "\n\t" or ch.isprintable()).strip()
    if not text:
        raise ValidationError("description is empty: describe the population to generate")
    if len(text) > MAX_DESCRIPTION_CHARS:
        raise ValidationError(f"description is {len(text)} characters; the limit is {MAX_DESCRIPTION_CHARS}")
    return text


def validate_spec(
    *,
    user_id: int,
    description: object,
    language: object,
    count: object,
    images_per_persona: object,
    seed: object = None,
    targets: object = None,
) -> TaskSpec:
    """Check a task request; raises ``ValidationError`` with a message a user can act on."""
    text = clean_description(description)
    if not isinstance(language, str):
        raise ValidationError("language must be text")
    lang = normalise_language(language)
    n = _as_int(count, "number of personas")
    if not MIN_PERSONAS <= n <= MAX_PERSONAS:
        raise ValidationError(f"number of personas must be between {MIN_PERSONAS} and {MAX_PERSONAS}, got {n}")
    k = _as_int(images_per_persona, "images per persona")
    if k not in ALLOWED_IMAGES_PER_PERSONA:
        allowed = ", ".join(map(str, ALLOWED_IMAGES_PER_PERSONA))
        raise ValidationError(f"images per persona must be one of {allowed}, got {k}")
    s: int | None = None
    if seed is not None and seed != "":
        s = _as_int(seed, "seed")
        if not 0 <= s <= MAX_SEED:
            raise ValidationError(f"seed must be between 0 and {MAX_SEED}")
    return TaskSpec(user_id, text, lang, n, k, s, parse_targets(targets))


def build_snapshot(db: Database, settings: Settings) -> dict[str, Any]:
    """The configuration frozen with a task at submit time; the worker uses it, exports show it."""
    check_provider_names(settings.persona_provider, settings.image_provider)
    with db.session() as session:
        prompts = q.get_settings_map(session, (*BIO_PROMPT_KEYS, IDENTITY_SETTING_KEY))
        toggles = q.get_config_values(session)
    return {
        "app_version": __version__,
        "frozen_at": utcnow().isoformat(),
        "bio_prompts": {key: prompts.get(key, "") for key in BIO_PROMPT_KEYS},
        "toggles": {key: bool(toggles.get(key, False)) for key in CONFIG_TOGGLES},
        "providers": {
            "persona": settings.persona_provider,
            "prompt": settings.persona_provider,
            "image": settings.image_provider,
        },
        "models": {
            "chat": settings.openai_chat_model if settings.persona_provider == "openai" else None,
            "image": settings.openai_image_model if settings.image_provider == "openai" else None,
            "flowise_persona_flow": settings.flowise_persona_flow_id if settings.persona_provider == "flowise" else None,
            "flowise_prompt_flow": settings.flowise_prompt_flow_id if settings.persona_provider == "flowise" else None,
        },
        "base_prompt_append": settings.base_prompt_append,
        "identity": identity_snapshot(prompts.get(IDENTITY_SETTING_KEY), settings.image_provider),
    }


def new_task_id() -> str:
    """A random, unguessable 12-character task id (the seed column is String(12))."""
    return secrets.token_hex(6)


def submit_task(db: Database, spec: TaskSpec, snapshot: dict[str, Any]) -> str:
    """Insert one pending task with its config snapshot (``build_snapshot``); returns its ``task_id``."""
    seed = spec.seed if spec.seed is not None else secrets.randbelow(2**31)
    with db.transaction() as session:
        if q.get_user(session, spec.user_id) is None:
            raise ValidationError(f"no user with id {spec.user_id}")
        task_id = new_task_id()
        while q.task_id_exists(session, task_id):
            task_id = new_task_id()
        q.insert_task(
            session,
            task_id=task_id,
            user_id=spec.user_id,
            persona_description=spec.description,
            bio_language=spec.language,
            number_to_generate=spec.count,
            images_per_persona=spec.images_per_persona,
            seed=seed,
            config_snapshot=snapshot,
            targets=spec.targets,
        )
    log.info("task %s submitted: %d personas x %d images", task_id, spec.count, spec.images_per_persona)
    return task_id


def _visible_task(session: Any, task_id: str, actor: User | None) -> GenerationTask:
    """The task if the actor may see it. Other users' tasks look like missing ones (no id probing)."""
    task = q.get_task(session, task_id)
    if task is None or (actor is not None and not actor.is_admin and task.user_id != actor.id):
        raise NotFoundError(f"no task {task_id!r}")
    return task


@dataclass(frozen=True)
class TaskStatusReport:
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


def retry_task(db: Database, task_id: str, actor: User | None = None) -> int:
    """Re-run only what failed (failed personas, missing personas, missing images). Returns personas reset."""
    with db.transaction(immediate=True) as session:
        task = _visible_task(session, task_id, actor)
        if task.status not in (TaskStatus.PARTIAL.value, TaskStatus.FAILED.value, TaskStatus.CANCELLED.value):
            raise ConflictError(f"task {task_id} is {task.status}: only partial, failed or cancelled tasks can be retried")
        return q.reset_task_for_retry(session, task)


def delete_task(db: Database, storage: Storage, task_id: str, actor: User | None = None) -> int:
    """Delete a task's rows and stored objects. Refused while a worker holds it (cancel first)."""
    with db.transaction(immediate=True) as session:
        task = _visible_task(session, task_id, actor)
        if task.lease_expires_at is not None and task.lease_expires_at > utcnow():
            raise ConflictError(f"task {task_id} is running: cancel it first, then delete it")
        q.delete_task_row(session, task)
    removed = storage.delete_prefix(f"{task_id}/")
    log.info("task %s deleted with %d stored objects", task_id, removed)
    return removed


def rerun_task(db: Database, task_id: str, actor: User, *, same_seed: bool = True) -> str:
    """A new pending task with the same request and frozen config (same seed, or a new one)."""
    with db.session() as session:
        task = _visible_task(session, task_id, actor)
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
    if not snapshot:
        raise ConflictError(f"task {task_id} has no frozen config to re-run (a legacy task): submit it anew")
    snapshot["rerun_of"] = task_id
    new_id = submit_task(db, spec, snapshot)
    with db.transaction() as session:
        new_task = q.get_task(session, new_id)
        if new_task is not None:
            new_task.rerun_of = task_id
    return new_id


def require_admin(actor: User | None) -> None:
    if actor is not None and not actor.is_admin:
        raise AccessDenied("only administrators can change this")


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


# Typical seconds per call, by provider: the estimate shown before submitting.
_SECONDS_PER_CALL = {
    ("persona", "offline"): 0.05, ("persona", "flowise"): 25.0, ("persona", "openai"): 20.0,
    ("prompt", "offline"): 0.0, ("prompt", "flowise"): 6.0, ("prompt", "openai"): 5.0,
    ("image", "offline"): 0.25, ("image", "openai"): 40.0,
}


@dataclass(frozen=True)
class Estimate:
    persona_calls: int
    prompt_calls: int
    image_calls: int
    seconds: float

    @property
    def calls(self) -> int:
        return self.persona_calls + self.prompt_calls + self.image_calls


def estimate_task(settings: Settings, count: int, images_per_persona: int) -> Estimate:
    """Provider calls a task will make (retries aside) and a rough duration with the configured parallelism."""
    blocks = max(1, images_per_persona // IMAGES_PER_BLOCK)
    persona_calls = -(-count // PERSONA_BATCH_SIZE)
    prompt_calls = count * blocks
    image_calls = count * (1 + blocks)
    per = _SECONDS_PER_CALL
    data_seconds = -(-persona_calls // MAX_BATCHES_IN_FLIGHT) * per.get(("persona", settings.persona_provider), 20.0)
    persona_seconds = blocks * (
        per.get(("prompt", settings.persona_provider), 5.0) + per.get(("image", settings.image_provider), 40.0)
    ) + per.get(("image", settings.image_provider), 40.0)
    image_seconds = -(-count // max(1, settings.persona_threads)) * persona_seconds
    return Estimate(persona_calls, prompt_calls, image_calls, data_seconds + image_seconds)


def preview_personas(db: Database, settings: Settings, description: str, language: str, count: int,
                     seed: int | None = None) -> PersonaBatch:
    """1–3 personas from the configured provider with the current prompts, without images; nothing is stored."""
    if not 1 <= count <= 3:
        raise ValidationError("a preview has 1 to 3 personas")
    description = clean_description(description)
    snapshot = build_snapshot(db, settings)
    provider = ProviderCache(settings).get("persona", settings.persona_provider)
    request = PersonaRequest(
        description=description,
        language=normalise_language(language),
        count=count,
        bio_prompts=snapshot["bio_prompts"],
        seed=seed if seed is not None else secrets.randbelow(2**31),
        batch_number=1,
    )
    batch: PersonaBatch = provider.generate(request)
    return batch
