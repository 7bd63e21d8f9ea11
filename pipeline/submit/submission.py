"""Asking for a task: validate the request, freeze the configuration, submit it; preview it first (its estimate
is in ``estimates``).

The UI and the CLI both call these functions; each check on input happens before anything is written. What
happens to a task after it is submitted (status, cancel, retry, delete, re-run) is in ``task_control``.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Mapping
from typing import Any

import db.queries as q
from db.models import User, utcnow
from db.session import Database
from pipeline import __version__
from pipeline.core.config import Settings
from pipeline.core.domain import (
    ALLOWED_IMAGES_PER_PERSONA,
    BIO_PROMPT_KEYS,
    CONFIG_TOGGLES,
    MAX_DESCRIPTION_CHARS,
    MAX_PERSONAS,
    MIN_PERSONAS,
    PersonaBatch,
    PersonaRequest,
    TaskSpec,
)
from pipeline.core.errors import ValidationError
from pipeline.core.identity import IDENTITY_SETTING_KEY, normalise_mode
from pipeline.core.identity import snapshot as identity_snapshot
from pipeline.core.languages import normalise_language
from pipeline.core.targets import parse_targets
from pipeline.providers.registry import ProviderCache, check_provider_names
from pipeline.submit.settings import TASK_SETTING_KEYS, parse_task_settings
from pipeline.submit.user_limits import admit_preview, check_task_limit

log = logging.getLogger(__name__)

MAX_SEED = 2**63 - 1
_WHOLE_NUMBER = re.compile(r"-?[0-9]{1,30}")


def _as_int(value: object, what: str) -> int:
    if isinstance(value, bool):
        raise ValidationError(f"{what} must be a whole number, not {value!r}")
    if isinstance(value, int):
        return value
    # ASCII digits, at most 30 of them: str.isdigit() also passes "²" (which int() refuses), and int() refuses
    # 4,300 digits; either would escape as a ValueError instead of a message.
    if isinstance(value, str) and _WHOLE_NUMBER.fullmatch(value.strip()):
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


def build_snapshot(
    db: Database, settings: Settings, task_settings: Mapping[str, object] | None = None
) -> dict[str, Any]:
    """The configuration frozen with a task at submit time; the worker uses it, exports show it.

    ``task_settings``: the task's own toggles, identity-check mode and bio prompts (``TASK_SETTING_KEYS``) over the
    global defaults, checked here (``ValidationError`` before anything is written); ``set_for_task`` lists those
    that differ from the defaults."""
    check_provider_names(settings.persona_provider, settings.image_provider)
    own = parse_task_settings(task_settings or {})
    with db.session() as session:
        prompts = q.get_settings_map(session, (*BIO_PROMPT_KEYS, IDENTITY_SETTING_KEY))
        toggles = q.get_config_values(session)
    defaults: dict[str, object] = {
        **{key: bool(toggles.get(key, False)) for key in CONFIG_TOGGLES},
        IDENTITY_SETTING_KEY: normalise_mode(prompts.get(IDENTITY_SETTING_KEY)),
        **{key: prompts.get(key, "") for key in BIO_PROMPT_KEYS},
    }
    values = {**defaults, **own}
    return {
        "app_version": __version__,
        "frozen_at": utcnow().isoformat(),
        "bio_prompts": {key: str(values[key]) for key in BIO_PROMPT_KEYS},
        "toggles": {key: bool(values[key]) for key in CONFIG_TOGGLES},
        "set_for_task": [key for key in TASK_SETTING_KEYS if values[key] != defaults[key]],
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
        "identity": identity_snapshot(str(values[IDENTITY_SETTING_KEY]), settings.image_provider),
    }


def new_task_id() -> str:
    """A random, unguessable 12-character task id (the seed column is String(12))."""
    return secrets.token_hex(6)


def submit_task(db: Database, spec: TaskSpec, snapshot: dict[str, Any], *, budget: float | None = None) -> str:
    """Insert one pending task with its config snapshot (``build_snapshot``) and its budget in dollars
    (``pipeline.core.usage.parse_budget``; None: none); returns its ``task_id``."""
    seed = spec.seed if spec.seed is not None else secrets.randbelow(2**31)
    with db.transaction() as session:
        if q.get_user(session, spec.user_id) is None:
            raise ValidationError(f"no user with id {spec.user_id}")
        check_task_limit(session, spec.user_id)  # the administrator's limit of unfinished tasks per user
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
            budget=budget,
        )
    log.info("task %s submitted: %d personas x %d images", task_id, spec.count, spec.images_per_persona)
    return task_id


def preview_personas(db: Database, settings: Settings, description: str, language: str, count: int,
                     seed: int | None = None, task_settings: Mapping[str, object] | None = None, *,
                     user: User | None = None) -> PersonaBatch:
    """1–3 personas from the configured provider without images, nothing stored; with the bio prompts the task
    would freeze (the global ones, or those of ``task_settings``). A preview of ``user`` counts against the
    administrator's hourly limit of previews per user."""
    if not 1 <= count <= 3:
        raise ValidationError("a preview has 1 to 3 personas")
    description = clean_description(description)
    snapshot = build_snapshot(db, settings, task_settings)
    provider = ProviderCache(settings).get("persona", settings.persona_provider)
    if user is not None:
        admit_preview(db, user)
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
