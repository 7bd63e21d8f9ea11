"""Queries on ``users``: accounts, roles, logins and the persisted lock-out."""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from db.models import User, utcnow

__all__ = [
    "count_users",
    "get_user",
    "get_user_by_email",
    "insert_user",
    "list_users",
    "record_login_failure",
    "record_login_success",
]


def count_users(session: Session) -> int:
    return session.scalar(sa.select(sa.func.count()).select_from(User)) or 0


def get_user(session: Session, user_id: int) -> User | None:
    return session.get(User, user_id)


def get_user_by_email(session: Session, email: str) -> User | None:
    return session.scalar(sa.select(User).where(sa.func.lower(User.email) == email.strip().lower()))


def insert_user(session: Session, email: str, password_hash: str, role: str) -> User:
    user = User(email=email, password_hash=password_hash, role=role, is_active=True, created_at=utcnow())
    session.add(user)
    session.flush()
    return user


def list_users(session: Session) -> list[User]:
    return list(session.scalars(sa.select(User).order_by(User.email)))


def record_login_success(session: Session, user: User, now: datetime | None = None) -> None:
    user.last_login = now or utcnow()
    user.failed_logins = 0
    user.locked_until = None


def record_login_failure(
    session: Session, user: User, *, max_failures: int, lock_for: timedelta, now: datetime | None = None
) -> bool:
    """Count a failed login; lock the account once ``max_failures`` is reached. Returns True if now locked."""
    now = now or utcnow()
    user.failed_logins = (user.failed_logins or 0) + 1
    if user.failed_logins >= max_failures:
        user.locked_until = now + lock_for
        user.failed_logins = 0
        return True
    return False
