"""Global settings: the four bio prompts, ``max_concurrent_tasks``, ``identity_check``, the providers' limits
(``settings``) and the four toggles (``config``).

Changes are validated, restricted to administrators and audited. A running task keeps its frozen snapshot;
new values apply to the next submitted task (the cap to the next claim, a provider's limits within seconds to
every running task: they are read at each call's admission).

The toggles, the identity check and the bio prompts are also each task's own to set at submit time (the global
values are the defaults); ``parse_task_settings`` checks them with the same rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import db.queries as q
from db.models import User
from db.session import Database
from pipeline.core.domain import BIO_PROMPT_KEYS, CONFIG_TOGGLES, MAX_CONCURRENT_TASKS_KEY
from pipeline.core.errors import AccessDenied, ValidationError
from pipeline.core.identity import IDENTITY_MODES, IDENTITY_SETTING_KEY, normalise_mode

MAX_PROMPT_CHARS = 20_000
MAX_CONCURRENT_LIMIT = q.MAX_CONCURRENT_LIMIT
MAX_PROVIDER_CONCURRENCY = q.MAX_PROVIDER_CONCURRENCY
PROVIDER_LIMIT_KEYS: tuple[str, ...] = q.limit_setting_keys()  # {persona,prompt,image}_{concurrency,rate_per_minute}
USER_LIMIT_KEYS: tuple[str, ...] = q.USER_LIMIT_KEYS  # per-user limits (``user_limits``); 0 is no limit
SETTING_KEYS: tuple[str, ...] = (*BIO_PROMPT_KEYS, MAX_CONCURRENT_TASKS_KEY, IDENTITY_SETTING_KEY, *CONFIG_TOGGLES,
                                 *PROVIDER_LIMIT_KEYS, *USER_LIMIT_KEYS)
# What a task may set for itself at submit time (New task, ``submit --set``/``--config``); the global values are
# its defaults. Each is checked by the rule that checks the global setting.
TASK_SETTING_KEYS: tuple[str, ...] = (*CONFIG_TOGGLES, IDENTITY_SETTING_KEY, *BIO_PROMPT_KEYS)
TaskSettings = dict[str, bool | str]
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


@dataclass(frozen=True)
class GlobalSettings:
    bio_prompts: dict[str, str]
    max_concurrent_tasks: int
    toggles: dict[str, bool]
    identity_check: str = "auto"  # auto (on for real image providers), on or off
    provider_limits: dict[str, q.ProviderLimits] = field(default_factory=dict)  # by kind: persona, prompt, image
    user_limits: dict[str, int] = field(default_factory=dict)  # by key of USER_LIMIT_KEYS; 0: no limit


def read_settings(db: Database) -> GlobalSettings:
    with db.session() as session:
        values = q.get_settings_map(session)
        toggles = q.get_config_values(session)
        cap = q.read_max_concurrent_tasks(session)
        limits = {kind: q.read_provider_limits(session, kind) for kind in q.LIMIT_KINDS}
        user_limits = {key: q.read_user_limit(session, key) for key in USER_LIMIT_KEYS}
    return GlobalSettings(
        bio_prompts={key: values.get(key, "") for key in BIO_PROMPT_KEYS},
        max_concurrent_tasks=cap,
        toggles={key: bool(toggles.get(key, False)) for key in CONFIG_TOGGLES},
        identity_check=normalise_mode(values.get(IDENTITY_SETTING_KEY)),
        provider_limits=limits,
        user_limits=user_limits,
    )


def get_setting_value(db: Database, key: str) -> str:
    """The value of one key as text (booleans as true/false)."""
    _check_key(key)
    current = read_settings(db)
    if key in CONFIG_TOGGLES:
        return str(current.toggles[key]).lower()
    if key == MAX_CONCURRENT_TASKS_KEY:
        return str(current.max_concurrent_tasks)
    if key == IDENTITY_SETTING_KEY:
        return current.identity_check
    if key in PROVIDER_LIMIT_KEYS:
        limits = current.provider_limits[key.split("_", 1)[0]]
        if key.endswith("_concurrency"):
            return str(limits.concurrency)
        return q.RATE_OFF if limits.rate_per_minute is None else str(limits.rate_per_minute)
    if key in USER_LIMIT_KEYS:
        return str(current.user_limits[key])
    return current.bio_prompts[key]


def _check_key(key: str) -> None:
    if key not in SETTING_KEYS:
        raise ValidationError(f"unknown setting {key!r}; valid keys are: {', '.join(SETTING_KEYS)}")


def parse_bool(value: str) -> bool:
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValidationError(f"{value!r} is not a boolean: use true or false")


def parse_cap(value: str) -> int:
    """``max_concurrent_tasks`` as an admin typed it (``q.parse_max_concurrent_tasks``, the one parser)."""
    try:
        return q.parse_max_concurrent_tasks(value)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


def parse_provider_limit(key: str, value: str) -> str:
    """A provider's concurrency (a whole number from 1 to 512) or requests per minute (1 to 100000, or off) as an
    admin typed it, in its stored form."""
    try:
        if key.endswith("_concurrency"):
            return str(q.parse_provider_concurrency(value, key))
        rate = q.parse_provider_rate(value, key)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None
    return q.RATE_OFF if rate is None else str(rate)


def parse_user_limit(key: str, value: str) -> int:
    """A per-user limit as an admin typed it: a whole number, 0 for no limit (``q.parse_user_limit``)."""
    try:
        return q.parse_user_limit(key, value)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


def parse_identity_mode(value: str) -> str:
    text = str(value).strip().lower()
    if text not in IDENTITY_MODES:
        raise ValidationError(f"identity_check must be one of {', '.join(IDENTITY_MODES)}, got {text[:40]!r}")
    return text


def clean_prompt(value: str) -> str:
    text = "".join(ch for ch in str(value) if ch in "\n\t" or ch.isprintable()).strip()
    if not text:
        raise ValidationError("a bio prompt cannot be empty")
    if len(text) > MAX_PROMPT_CHARS:
        raise ValidationError(f"a bio prompt is limited to {MAX_PROMPT_CHARS} characters, got {len(text)}")
    return text


def parse_task_setting(key: str, value: object) -> bool | str:
    """One of a task's own settings (``TASK_SETTING_KEYS``), checked as the Settings page checks the global one:
    a toggle is true or false, the identity check auto, on or off, a bio prompt non-empty text within the limit."""
    if key not in TASK_SETTING_KEYS:
        raise ValidationError(f"unknown task setting {key[:60]!r}; a task can set: {', '.join(TASK_SETTING_KEYS)}")
    if key in CONFIG_TOGGLES and isinstance(value, bool):
        return value
    if not isinstance(value, str):  # a JSON number, list or null
        wanted = "true or false" if key in CONFIG_TOGGLES else "text"
        raise ValidationError(f"{key} must be {wanted}, got {type(value).__name__} {str(value)[:40]!r}")
    try:
        if key in CONFIG_TOGGLES:
            return parse_bool(value)
        if key == IDENTITY_SETTING_KEY:
            return parse_identity_mode(value)
        return clean_prompt(value)
    except ValidationError as exc:
        raise ValidationError(f"{key}: {exc}") from None


def parse_task_settings(values: object) -> TaskSettings:
    """A task's own settings from a mapping of key to value (a ``--config`` file's JSON object, ``--set`` pairs,
    the form's changed fields); ``ValidationError`` on the first unknown key or bad value, or when ``values`` is
    not a mapping."""
    if not isinstance(values, Mapping):
        raise ValidationError(f"a task's settings must be a JSON object of setting: value, got {type(values).__name__}")
    return {str(key): parse_task_setting(str(key), value) for key, value in values.items()}


def default_task_settings(current: GlobalSettings) -> TaskSettings:
    """The global values of ``TASK_SETTING_KEYS``: what a task gets unless it sets its own."""
    return {**current.toggles, IDENTITY_SETTING_KEY: current.identity_check, **current.bio_prompts}


def task_settings_of(snapshot: Mapping[str, Any] | None) -> TaskSettings:
    """The values of ``TASK_SETTING_KEYS`` a task's frozen configuration holds (to show it, or to start a new
    task from it)."""
    snapshot = snapshot or {}
    toggles = snapshot.get("toggles") or {}
    prompts = snapshot.get("bio_prompts") or {}
    return {
        **{key: bool(toggles.get(key, False)) for key in CONFIG_TOGGLES},
        IDENTITY_SETTING_KEY: normalise_mode((snapshot.get("identity") or {}).get("mode")),
        **{key: str(prompts.get(key) or "") for key in BIO_PROMPT_KEYS},
    }


def set_setting_value(db: Database, key: str, value: str, actor: User | None) -> bool:
    """Validate and store one setting; ``actor=None`` is the command line. Returns whether it changed."""
    if actor is not None and not actor.is_admin:
        raise AccessDenied("only administrators can change global settings")
    _check_key(key)
    if key in CONFIG_TOGGLES:
        flag = parse_bool(value)
        with db.transaction(immediate=True) as session:
            return q.set_config_value(session, key, flag, actor)
    if key == MAX_CONCURRENT_TASKS_KEY:
        text = str(parse_cap(value))
    elif key == IDENTITY_SETTING_KEY:
        text = parse_identity_mode(value)
    elif key in PROVIDER_LIMIT_KEYS:
        text = parse_provider_limit(key, value)
    elif key in USER_LIMIT_KEYS:
        text = str(parse_user_limit(key, value))
    else:
        text = clean_prompt(value)
    with db.transaction(immediate=True) as session:
        return q.set_setting(session, key, text, actor)


def setting_history(db: Database, key: str, limit: int = 20) -> list[q.AuditEntry]:
    """Who changed a setting, prompt or toggle, from what to what, newest first (the audit log)."""
    _check_key(key)
    with db.session() as session:
        return q.list_audit(session, target=key, limit=limit)
