"""Queries on ``settings`` (text values), ``config`` (booleans) and the audit log."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from db.models import AuditLog, Config, Setting, User, utcnow

__all__ = [
    "AuditEntry",
    "add_audit",
    "get_config_values",
    "get_setting",
    "get_settings_map",
    "list_audit",
    "set_config_value",
    "set_setting",
]


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
