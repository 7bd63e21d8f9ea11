"""User accounts: creation, password hashing (bcrypt), login with a lock-out persisted in the database, a growing
delay per client after failed logins, and sessions that a logout or a password reset ends."""

from __future__ import annotations

import functools
import logging
import math
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import bcrypt
from sqlalchemy.orm import Session

import db.queries as q
from db.models import User as User  # re-exported: the account type, as pages name it
from db.models import utcnow
from db.session import Database
from pipeline.core.errors import AccessDenied, ConflictError, NotFoundError, ValidationError

log = logging.getLogger(__name__)

MAX_FAILED_LOGINS = 5
LOCKOUT = timedelta(minutes=15)
# One client (an address, else a browser session) may fail this many times in a row freely (enough to lock one
# account, and to try the right password on it); each further failure makes it wait twice as long as the one
# before (1 s, 2 s, 4 s, ...) up to MAX_CLIENT_DELAY. A stranger can then lock an account once, not keep it
# locked: once the lock ends, locking it again takes MAX_FAILED_LOGINS more failures, hours apart.
FREE_CLIENT_FAILURES = 2 * MAX_FAILED_LOGINS
MAX_CLIENT_DELAY = timedelta(hours=1)
THROTTLE_MEMORY = timedelta(days=1)  # a client's or an unknown e-mail's failures are forgotten after a quiet day
WRONG_LOGIN = "wrong e-mail or password"
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
    if password != password.strip():
        # streamlit-authenticator strips the password typed at login: such a password could never log in
        raise ValidationError("the password cannot begin or end with a space")
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
    """The first-run path: only while the database has no user at all.

    The check and the insert are one transaction holding the users table against other writers, so that two
    visitors of a fresh server cannot both create an administrator: the second is told one exists."""
    email = validate_email(email)
    validate_password(password)
    password_hash = hash_password(password)  # before the lock: bcrypt takes a while
    with db.transaction(immediate=True) as session:
        q.lock_users(session)
        if q.count_users(session) > 0:
            raise ConflictError("an administrator already exists: log in instead")
        user = q.insert_user(session, email, password_hash, "admin")
        q.add_audit(session, None, "user-create", email, None, user.role)
    log.info("first administrator created")
    return user


@dataclass(frozen=True)
class LoginResult:
    user: User | None
    message: str | None  # why the login failed, safe to show


def _lock_message(user: User, now: datetime) -> str | None:
    return _locked_until_message(user.locked_until, now)


def _locked_until_message(locked_until: datetime | None, now: datetime) -> str | None:
    if locked_until is not None and locked_until > now:
        minutes = max(1, int((locked_until - now).total_seconds() // 60) + 1)
        return f"too many failed logins: the account is locked for {minutes} more minute(s)"
    return None


def _email_key(email: str) -> str:
    """The throttle key of an e-mail without an account."""
    return "email:" + email[:300]


def _client_key(client: str) -> str:
    return "client:" + client[:300]


@functools.lru_cache(maxsize=1)
def _decoy_hash() -> str:
    """A bcrypt hash of a secret nobody knows, at ``hash_password``'s cost: an e-mail without an account and a
    locked account are checked against it, so that every login attempt costs the same bcrypt time."""
    return hash_password(secrets.token_urlsafe(32))


def login_client_address(address: str | None, forwarded_for: str | None, *, trust_proxy: bool) -> str | None:
    """The address the failed-login throttle counts: the connection's, or behind a reverse proxy that
    ``TRUST_PROXY_HEADERS`` vouches for, the last address of ``X-Forwarded-For`` (the one the proxy itself saw; the
    ones before it are whatever the client wrote)."""
    if trust_proxy and forwarded_for:
        last = forwarded_for.split(",")[-1].strip()
        if last:
            return last[:64]
    return address or None


def client_wait(db: Database, client: str | None, now: datetime | None = None) -> float:
    """Seconds ``client`` must still wait before its next login attempt (0 when it may try now)."""
    if not client:
        return 0.0
    now = now or utcnow()
    with db.session() as session:
        row = q.get_throttle(session, _client_key(client))
        if row is None or row.blocked_until is None or row.blocked_until <= now:
            return 0.0
        return (row.blocked_until - now).total_seconds()


def client_wait_message(seconds: float) -> str:
    return f"too many failed logins from here: try again in {math.ceil(seconds)} s"


def _note_client_failure(session: Session, client: str, now: datetime) -> None:
    row = q.throttle_for_update(session, _client_key(client), now)
    if row.last_failure_at < now - THROTTLE_MEMORY:
        row.failures = 0
    row.failures += 1
    row.last_failure_at = now
    extra = row.failures - FREE_CLIENT_FAILURES
    if extra > 0:
        delay = min(MAX_CLIENT_DELAY.total_seconds(), 2.0 ** min(extra - 1, 32))
        row.blocked_until = now + timedelta(seconds=delay)


def login_block(db: Database, email: str, now: datetime | None = None) -> str | None:
    """Why ``email`` may not log in now (locked or deactivated), or None. Used before a password check."""
    with db.session() as session:
        user = q.get_user_by_email(session, (email or "").strip().lower())
        if user is None:
            return None
        if not user.is_active:
            return "this account is deactivated: ask an administrator"
        return _lock_message(user, now or utcnow())


def note_failed_login(db: Database, email: str, now: datetime | None = None, *, client: str | None = None) -> str:
    """Count one failed login (persisted; a restart does not reset it) against the account and the client, and
    say what the user may see: the same words whether the e-mail has an account or not (an e-mail without one
    is counted and locked just like an account)."""
    now = now or utcnow()
    email = (email or "").strip().lower()
    with db.transaction(immediate=True) as session:
        if client:
            _note_client_failure(session, client, now)
        q.forget_throttles(session, now - THROTTLE_MEMORY)
        user = q.get_user_by_email(session, email) if email else None
        if user is None:
            row = q.throttle_for_update(session, _email_key(email), now)
            locked = _locked_until_message(row.blocked_until, now)
            if locked:
                return locked
            if row.last_failure_at < now - LOCKOUT:
                row.failures = 0
            row.failures += 1
            row.last_failure_at = now
            if row.failures >= MAX_FAILED_LOGINS:
                row.failures, row.blocked_until = 0, now + LOCKOUT
                return f"too many failed logins: the account is locked for {int(LOCKOUT.total_seconds() // 60)} minutes"
            return WRONG_LOGIN
        locked = _lock_message(user, now)
        if locked:
            return locked  # attempts on a locked account do not extend the lock
        if q.record_login_failure(session, user, max_failures=MAX_FAILED_LOGINS, lock_for=LOCKOUT, now=now):
            q.add_audit(session, None, "user-locked", user.email, None, user.locked_until.isoformat() if user.locked_until else None)
            return f"too many failed logins: the account is locked for {int(LOCKOUT.total_seconds() // 60)} minutes"
        return WRONG_LOGIN


def note_login(db: Database, email: str, now: datetime | None = None) -> User | None:
    """Record a successful login (``last_login``, failures reset); None when the account may not log in."""
    now = now or utcnow()
    with db.transaction(immediate=True) as session:
        user = q.get_user_by_email(session, (email or "").strip().lower())
        if user is None or not user.is_active or _lock_message(user, now):
            return None
        q.record_login_success(session, user, now)
        return user


def authenticate(
    db: Database, email: str, password: str, now: datetime | None = None, *, client: str | None = None
) -> LoginResult:
    """Check a login from ``client`` (an address or a browser session; None from the command line).

    A client that failed too often waits first (nothing is checked meanwhile). Every attempt then costs one
    bcrypt check at the same cost, whether the e-mail has an account, the account is locked or not; a failure
    counts against the account (locked after ``MAX_FAILED_LOGINS``, persisted) and the client. An e-mail
    without an account gets the same messages as one with an account. A deactivated account is named only to
    whoever typed its right password.
    """
    now = now or utcnow()
    email = (email or "").strip().lower()
    wait = client_wait(db, client, now)
    if wait > 0:
        return LoginResult(None, client_wait_message(wait))
    with db.session() as session:
        user = q.get_user_by_email(session, email) if email else None
        if user is None:
            unknown = q.get_throttle(session, _email_key(email))
            locked = _locked_until_message(unknown.blocked_until if unknown else None, now)
        else:
            locked = _lock_message(user, now)
        stored = user.password_hash if user is not None and locked is None else _decoy_hash()
        active = user is not None and user.is_active
    password_ok = verify_password(password or "", stored) and user is not None and locked is None
    if not password_ok:
        return LoginResult(None, note_failed_login(db, email, now, client=client))
    if not active:
        return LoginResult(None, "this account is deactivated: ask an administrator")
    user = note_login(db, email, now)
    if user is None:
        return LoginResult(None, "this account is deactivated: ask an administrator")
    return LoginResult(user, None)


def end_sessions(db: Database, email: str, now: datetime | None = None) -> None:
    """Log ``email`` out everywhere: sessions and login cookies issued before now are refused from now on
    (the logout button; the browser's own cookie is deleted too, but a copy of it would otherwise live on)."""
    with db.transaction(immediate=True) as session:
        user = q.get_user_by_email(session, (email or "").strip().lower())
        if user is not None:
            q.revoke_sessions(session, user, now)


def session_user(db: Database, email: str, since: datetime) -> User | None:
    """The user of a session (or login cookie) that began at ``since``: only while the account is active and no
    logout or password reset has ended its sessions since. A lock-out does not end sessions: it stops password
    guesses, not the people already signed in."""
    with db.session() as session:
        user = q.get_user_by_email(session, (email or "").strip().lower())
        if user is None or not user.is_active:
            return None
        if user.sessions_revoked_at is not None and since < user.sessions_revoked_at:
            return None
        return user


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
        q.revoke_sessions(session, user)  # whoever knew the old password is signed out
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
