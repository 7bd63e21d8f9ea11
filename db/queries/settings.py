"""Queries on ``settings`` (text values), ``config`` (booleans) and the audit log, and the one parser of the
``max_concurrent_tasks`` setting."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from db.models import AuditLog, Config, Setting, User, utcnow

__all__ = [
    "DEFAULT_MAX_CONCURRENT_TASKS",
    "MAX_CONCURRENT_LIMIT",
    "MAX_CONCURRENT_TASKS_KEY",
    "MAX_PREVIEWS_PER_HOUR_KEY",
    "MAX_RUNNING_TASKS_PER_USER_KEY",
    "MAX_USER_LIMIT",
    "USER_LIMIT_KEYS",
    "AuditEntry",
    "add_audit",
    "count_audit_since",
    "get_config_values",
    "get_setting",
    "get_settings_map",
    "list_audit",
    "parse_max_concurrent_tasks",
    "parse_user_limit",
    "read_max_concurrent_tasks",
    "read_user_limit",
    "set_config_value",
    "set_setting",
]

log = logging.getLogger(__name__)

MAX_CONCURRENT_TASKS_KEY = "max_concurrent_tasks"
MAX_CONCURRENT_LIMIT = 64
DEFAULT_MAX_CONCURRENT_TASKS = 1  # the seed's value, also used when the stored one is missing or damaged
_WHOLE_NUMBER = re.compile(r"-?[0-9]{1,12}")  # more digits can only be absurd (and int() of a long text is slow)
MAX_RUNNING_TASKS_PER_USER_KEY = "max_running_tasks_per_user"
MAX_PREVIEWS_PER_HOUR_KEY = "max_previews_per_user_per_hour"
USER_LIMIT_KEYS = (MAX_RUNNING_TASKS_PER_USER_KEY, MAX_PREVIEWS_PER_HOUR_KEY)  # 0 (or no row): no limit
MAX_USER_LIMIT = 10_000
_warned: set[str] = set()  # damaged stored values already reported (the cap is read at every claim)


@dataclass(frozen=True)
class AuditEntry:
    actor: str
    action: str
    target: str
    old_value: str | None
    new_value: str | None
    created_at: datetime


def get_setting(session: Session, key: str) -> str | None:
    return session.scalar(sa.select(Setting.value).where(Setting.key == key))


def get_settings_map(session: Session, keys: tuple[str, ...] | None = None) -> dict[str, str]:
    query = sa.select(Setting.key, Setting.value)
    if keys is not None:
        query = query.where(Setting.key.in_(keys))
    return {key: value for key, value in session.execute(query)}


def set_setting(session: Session, key: str, value: str, actor: User | None) -> bool:
    """Insert or update a text setting, auditing the change. Returns False when nothing changed."""
    row = session.scalar(sa.select(Setting).where(Setting.key == key))
    old = row.value if row else None
    if old == value:
        return False
    if row is None:
        session.add(Setting(key=key, value=value, created_at=utcnow(), updated_at=utcnow()))
    else:
        row.value = value
        row.updated_at = utcnow()
    add_audit(session, actor, "setting", key, old, value)
    return True


def parse_whole_number(text: str, name: str, low: int, high: int, *, besides: str = "") -> int:
    """A setting's value as an administrator typed it: a whole number from ``low`` to ``high``. Raises
    ``ValueError`` saying what is wrong otherwise; ``besides`` is added to the message (``"0 for no limit"``)."""
    value = str(text).strip()
    note = f" ({besides})" if besides else ""
    if not _WHOLE_NUMBER.fullmatch(value):
        raise ValueError(f"{name} must be a whole number{note}, got {value[:40]!r}")
    number = int(value)
    if not low <= number <= high:
        raise ValueError(f"{name} must be between {low} and {high}{note}, got {number}")
    return number


def parse_max_concurrent_tasks(text: str) -> int:
    """The global cap on running tasks from its text form: a whole number from 1 to ``MAX_CONCURRENT_LIMIT``."""
    return parse_whole_number(text, MAX_CONCURRENT_TASKS_KEY, 1, MAX_CONCURRENT_LIMIT)


def read_max_concurrent_tasks(session: Session, *, lock: bool = False) -> int:
    """The global cap on running tasks, read live from the database.

    ``lock=True`` is for the claim's write transaction: the row is locked ``FOR UPDATE`` on PostgreSQL (SQLite's
    ``BEGIN IMMEDIATE`` already excludes other writers), so that concurrent claims on every host take turns; a
    missing row (a damaged database) is recreated with the default so that there is a row to lock. A stored value
    that does not parse (edited by hand) reads as ``DEFAULT_MAX_CONCURRENT_TASKS``, with a warning in the log."""
    query = sa.select(Setting.value).where(Setting.key == MAX_CONCURRENT_TASKS_KEY)
    value = session.scalar(query.with_for_update() if lock else query)
    if value is None:
        if lock:
            now = utcnow()
            session.add(Setting(key=MAX_CONCURRENT_TASKS_KEY, value=str(DEFAULT_MAX_CONCURRENT_TASKS),
                                created_at=now, updated_at=now))
            session.flush()
        return DEFAULT_MAX_CONCURRENT_TASKS
    try:
        return parse_max_concurrent_tasks(value)
    except ValueError as exc:
        if value not in _warned:
            _warned.add(value)
            log.warning("the stored %s is not valid (%s): using %d until it is set again",
                        MAX_CONCURRENT_TASKS_KEY, exc, DEFAULT_MAX_CONCURRENT_TASKS)
        return DEFAULT_MAX_CONCURRENT_TASKS


def get_config_values(session: Session) -> dict[str, bool]:
    return {key: bool(value) for key, value in session.execute(sa.select(Config.key, Config.value))}


def set_config_value(session: Session, key: str, value: bool, actor: User | None) -> bool:
    row = session.scalar(sa.select(Config).where(Config.key == key))
    old = None if row is None else bool(row.value)
    if old == value:
        return False
    if row is None:
        session.add(Config(key=key, value=value, created_at=utcnow(), updated_at=utcnow()))
    else:
        row.value = value
        row.updated_at = utcnow()
    add_audit(session, actor, "config", key, None if old is None else str(old).lower(), str(value).lower())
    return True


def add_audit(
    session: Session, actor: User | None, action: str, target: str, old: str | None, new: str | None
) -> None:
    session.add(
        AuditLog(
            user_id=actor.id if actor else None,
            actor=actor.email if actor else "system",
            action=action,
            target=target,
            old_value=old,
            new_value=new,
            created_at=utcnow(),
        )
    )


def list_audit(session: Session, *, target: str | None = None, limit: int = 100) -> list[AuditEntry]:
    query = sa.select(AuditLog).order_by(AuditLog.created_at.desc(), AuditLog.id.desc()).limit(limit)
    if target is not None:
        query = query.where(AuditLog.target == target)
    return [
        AuditEntry(r.actor, r.action, r.target, r.old_value, r.new_value, r.created_at)
        for r in session.scalars(query)
    ]


def parse_user_limit(key: str, text: str) -> int:
    """A per-user limit (``USER_LIMIT_KEYS``) from its text form: a whole number from 0 (no limit) to
    ``MAX_USER_LIMIT``."""
    return parse_whole_number(text, key, 0, MAX_USER_LIMIT, besides="0 for no limit")


def read_user_limit(session: Session, key: str) -> int:
    """A per-user limit as stored; 0 (no limit) when unset, or when the stored text is damaged (logged)."""
    value = get_setting(session, key)
    if value is None:
        return 0
    try:
        return parse_user_limit(key, value)
    except ValueError as exc:
        if value not in _warned:
            _warned.add(value)
            log.warning("the stored %s is not valid (%s): no limit until it is set again", key, exc)
        return 0


def count_audit_since(session: Session, user_id: int, action: str, since: datetime) -> int:
    """How many ``action`` entries ``user_id`` has written to the audit log since ``since``."""
    query = sa.select(sa.func.count()).select_from(AuditLog).where(
        AuditLog.user_id == user_id, AuditLog.action == action, AuditLog.created_at >= since)
    return int(session.scalar(query) or 0)
