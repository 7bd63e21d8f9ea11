"""Queries on ``users`` and ``login_throttle``: accounts, roles, logins, the persisted lock-out and the
per-client throttle."""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.models import GenerationTask, LoginThrottle, TaskStatus, User, utcnow

__all__ = [
    "count_unfinished_tasks",
    "count_users",
    "forget_throttles",
    "get_throttle",
    "get_user",
    "get_user_by_email",
    "insert_user",
    "list_users",
    "lock_user",
    "lock_users",
    "record_login_failure",
    "record_login_success",
    "revoke_sessions",
    "throttle_for_update",
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


def lock_users(session: Session) -> None:
    """Hold the users table against other writers until the transaction ends (PostgreSQL; SQLite's
    ``BEGIN IMMEDIATE`` already does): a count-then-insert, such as the first administrator's, stays atomic."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.text("LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE"))


def lock_user(session: Session, user_id: int) -> User | None:
    """The user row, locked ``FOR UPDATE`` on PostgreSQL: a check-then-insert per user (a per-user limit) runs
    one at a time for that user."""
    return session.scalar(sa.select(User).where(User.id == user_id).with_for_update())


def count_unfinished_tasks(session: Session, user_id: int) -> int:
    """Tasks of ``user_id`` that are not finished (pending, held or running)."""
    query = sa.select(sa.func.count()).select_from(GenerationTask).where(
        GenerationTask.user_id == user_id, GenerationTask.status.not_in(TaskStatus.finished()))
    return int(session.scalar(query) or 0)


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


def revoke_sessions(session: Session, user: User, now: datetime | None = None) -> None:
    """End every session and login cookie of ``user`` issued before now (the gate checks it on every run)."""
    user.sessions_revoked_at = now or utcnow()


def get_throttle(session: Session, key: str) -> LoginThrottle | None:
    return session.scalar(sa.select(LoginThrottle).where(LoginThrottle.key == key))


def throttle_for_update(session: Session, key: str, now: datetime) -> LoginThrottle:
    """The throttle row of ``key`` for a failed login, created when missing; locked ``FOR UPDATE`` on PostgreSQL
    (SQLite's ``BEGIN IMMEDIATE`` already excludes other writers) so that concurrent failures all count."""
    query = sa.select(LoginThrottle).where(LoginThrottle.key == key).with_for_update()
    row = session.scalar(query)
    if row is None:
        try:
            with session.begin_nested():  # another login may insert the same key at the same moment
                session.add(LoginThrottle(key=key, failures=0, last_failure_at=now, blocked_until=None))
        except IntegrityError:
            pass
        row = session.scalar(query)
        assert row is not None
    return row


def forget_throttles(session: Session, before: datetime) -> int:
    """Drop the throttle rows whose last failure is older than ``before`` and that block nothing any more."""
    result = session.execute(
        sa.delete(LoginThrottle).where(
            LoginThrottle.last_failure_at < before,
            sa.or_(LoginThrottle.blocked_until.is_(None), LoginThrottle.blocked_until < before),
        )
    )
    return int(getattr(result, "rowcount", 0) or 0)
