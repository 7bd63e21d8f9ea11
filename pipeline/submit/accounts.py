"""User accounts: creation, password hashing (bcrypt), login with a lock-out persisted in the database."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import bcrypt

import db.queries as q
from db.models import User as User  # re-exported: the account type, as pages name it
from db.models import utcnow
from db.session import Database
from pipeline.core.errors import AccessDenied, ConflictError, NotFoundError, ValidationError

log = logging.getLogger(__name__)

MAX_FAILED_LOGINS = 5
LOCKOUT = timedelta(minutes=15)
MIN_PASSWORD_CHARS = 8
MAX_PASSWORD_BYTES = 72  # bcrypt ignores anything longer
ROLES = ("admin", "user")
# RFC 5322 "atext" in the local part, LDH labels in the domain (IDN domains in their xn-- form): nothing that
# could be markup or quoting ends up in a username.
_EMAIL = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.[A-Za-z]{2,63}$"
)


def hash_password(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt()).decode()


def verify_password(password: str, password_hash: str) -> bool:
    try:
        return bcrypt.checkpw(password.encode(), password_hash.encode())
    except ValueError:  # not a bcrypt hash
        return False


def validate_email(email: str) -> str:
    email = (email or "").strip().lower()
    if len(email) > 255 or not _EMAIL.match(email):
        raise ValidationError(f"{email[:60]!r} is not a valid e-mail address")
    return email


def validate_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_CHARS:
        raise ValidationError(f"the password must have at least {MIN_PASSWORD_CHARS} characters")
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        raise ValidationError(f"the password must be at most {MAX_PASSWORD_BYTES} bytes long")
    if any(not ch.isprintable() for ch in password):
        raise ValidationError("the password contains control characters")
    return password


def _require_admin(actor: User | None) -> None:
    if actor is not None and not actor.is_admin:
        raise AccessDenied("only administrators can manage users")


def create_user(db: Database, email: str, password: str, *, admin: bool = False, actor: User | None = None) -> User:
    """Create an active user. ``actor=None`` is the command line or the first-run form."""
    _require_admin(actor)
    email = validate_email(email)
    validate_password(password)
    with db.transaction(immediate=True) as session:
        if q.get_user_by_email(session, email) is not None:
            raise ConflictError(f"a user {email} already exists")
        user = q.insert_user(session, email, hash_password(password), "admin" if admin else "user")
        q.add_audit(session, actor, "user-create", email, None, user.role)
    log.info("user created (role %s)", user.role)
    return user


def create_first_admin(db: Database, email: str, password: str) -> User:
    """The first-run path: only while the database has no user at all."""
    with db.session() as session:
        if q.count_users(session) > 0:
            raise ConflictError("an administrator already exists: log in instead")
    return create_user(db, email, password, admin=True)


@dataclass(frozen=True)
class LoginResult:
    user: User | None
    message: str | None  # why the login failed, safe to show


def _lock_message(user: User, now: datetime) -> str | None:
    if user.locked_until is not None and user.locked_until > now:
        minutes = max(1, int((user.locked_until - now).total_seconds() // 60) + 1)
        return f"too many failed logins: the account is locked for {minutes} more minute(s)"
    return None


def login_block(db: Database, email: str, now: datetime | None = None) -> str | None:
    """Why ``email`` may not log in now (locked or deactivated), or None. Used before a password check."""
    with db.session() as session:
        user = q.get_user_by_email(session, (email or "").strip().lower())
        if user is None:
            return None
        if not user.is_active:
            return "this account is deactivated: ask an administrator"
        return _lock_message(user, now or utcnow())


def note_failed_login(db: Database, email: str, now: datetime | None = None) -> str:
    """Count one failed login (persisted; a restart does not reset it) and say what the user may see."""
    now = now or utcnow()
    with db.transaction(immediate=True) as session:
        user = q.get_user_by_email(session, (email or "").strip().lower())
        if user is None:
            return "wrong e-mail or password"
        locked = _lock_message(user, now)
        if locked:
            return locked  # attempts on a locked account do not extend the lock
        if q.record_login_failure(session, user, max_failures=MAX_FAILED_LOGINS, lock_for=LOCKOUT, now=now):
            q.add_audit(session, None, "user-locked", user.email, None, user.locked_until.isoformat() if user.locked_until else None)
            return f"too many failed logins: the account is locked for {int(LOCKOUT.total_seconds() // 60)} minutes"
        return "wrong e-mail or password"


def note_login(db: Database, email: str, now: datetime | None = None) -> User | None:
    """Record a successful login (``last_login``, failures reset); None when the account may not log in."""
    now = now or utcnow()
    with db.transaction(immediate=True) as session:
        user = q.get_user_by_email(session, (email or "").strip().lower())
        if user is None or not user.is_active or _lock_message(user, now):
            return None
        q.record_login_success(session, user, now)
        return user


def authenticate(db: Database, email: str, password: str, now: datetime | None = None) -> LoginResult:
    """Check a login; counts failures and locks the account after ``MAX_FAILED_LOGINS`` (persisted)."""
    now = now or utcnow()
    with db.session() as session:
        user = q.get_user_by_email(session, (email or "").strip().lower())
        if user is None:
            return LoginResult(None, "wrong e-mail or password")
        locked = _lock_message(user, now)
        password_ok = locked is None and verify_password(password or "", user.password_hash)
    if locked:
        return LoginResult(None, locked)
    if not password_ok:
        return LoginResult(None, note_failed_login(db, email, now))
    user = note_login(db, email, now)
    if user is None:
        return LoginResult(None, "this account is deactivated: ask an administrator")
    return LoginResult(user, None)


def active_user(db: Database, email: str) -> User | None:
    """The user behind a session/cookie, only while active (an inactive user's cookie is refused)."""
    with db.session() as session:
        user = q.get_user_by_email(session, email)
        return user if user is not None and user.is_active else None


def list_users(db: Database, actor: User) -> list[User]:
    _require_admin(actor)
    with db.session() as session:
        return q.list_users(session)


def set_active(db: Database, actor: User, email: str, active: bool) -> None:
    _require_admin(actor)
    with db.transaction(immediate=True) as session:
        user = q.get_user_by_email(session, email)
        if user is None:
            raise NotFoundError(f"no user {email}")
        if user.id == actor.id and not active:
            raise ConflictError("you cannot deactivate your own account")
        if user.is_active != active:
            q.add_audit(session, actor, "user-active", user.email, str(user.is_active).lower(), str(active).lower())
            user.is_active = active


def set_role(db: Database, actor: User, email: str, role: str) -> None:
    _require_admin(actor)
    if role not in ROLES:
        raise ValidationError(f"role must be one of {', '.join(ROLES)}")
    with db.transaction(immediate=True) as session:
        user = q.get_user_by_email(session, email)
        if user is None:
            raise NotFoundError(f"no user {email}")
        if user.id == actor.id and role != "admin":
            raise ConflictError("you cannot remove your own administrator role")
        if user.role != role:
            q.add_audit(session, actor, "user-role", user.email, user.role, role)
            user.role = role


def reset_password(db: Database, actor: User, email: str, password: str) -> None:
    _require_admin(actor)
    validate_password(password)
    with db.transaction(immediate=True) as session:
        user = q.get_user_by_email(session, email)
        if user is None:
            raise NotFoundError(f"no user {email}")
        user.password_hash = hash_password(password)
        user.failed_logins = 0
        user.locked_until = None
        q.add_audit(session, actor, "user-password", user.email, None, "reset")


def count_users(db: Database) -> int:
    with db.session() as session:
        return q.count_users(session)


def login_directory(db: Database, now: datetime | None = None) -> list[dict[str, Any]]:
    """What the login form needs about every account: e-mail, stored bcrypt hash, role, active, locked."""
    now = now or utcnow()
    with db.session() as session:
        return [
            {
                "email": user.email,
                "password_hash": user.password_hash,
                "role": user.role,
                "active": bool(user.is_active),
                "locked": user.locked_until is not None and user.locked_until > now,
            }
            for user in q.list_users(session)
        ]
