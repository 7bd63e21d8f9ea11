"""Accounts on both backends: bcrypt, lock-out persisted in the database, deactivation, roles, audit."""

from __future__ import annotations

from datetime import timedelta

import pytest

import db.queries as q
from db.models import utcnow
from db.session import Database
from pipeline.core.errors import AccessDenied, ConflictError, ValidationError
from pipeline.submit import accounts
from tests.factories import PASSWORD, make_user


def test_password_is_stored_as_bcrypt_and_checked(database: Database) -> None:
    user = make_user(database)
    assert user.password_hash.startswith("$2") and PASSWORD not in user.password_hash
    result = accounts.authenticate(database, "ANA@example.org ", PASSWORD)
    assert result.user is not None and result.user.last_login is not None


def test_five_failures_lock_for_15_minutes_and_survive_a_new_connection(database: Database, db_url: str) -> None:
    make_user(database)
    now = utcnow()
    for _ in range(accounts.MAX_FAILED_LOGINS - 1):
        assert accounts.authenticate(database, "ana@example.org", "wrong password", now).message == "wrong e-mail or password"
    assert "locked" in (accounts.authenticate(database, "ana@example.org", "wrong password", now).message or "")
    fresh = Database(db_url)  # as after a restart: nothing lives in memory
    try:
        assert "locked" in (accounts.authenticate(fresh, "ana@example.org", PASSWORD, now).message or "")
        assert accounts.login_block(fresh, "ana@example.org", now)
        later = now + accounts.LOCKOUT + timedelta(seconds=1)
        assert accounts.authenticate(fresh, "ana@example.org", PASSWORD, later).user is not None
    finally:
        fresh.dispose()
    with database.session() as session:
        assert [e.action for e in q.list_audit(session, target="ana@example.org")] == ["user-locked", "user-create"]


def test_attempts_on_a_locked_account_do_not_extend_the_lock(database: Database) -> None:
    make_user(database)
    now = utcnow()
    for _ in range(accounts.MAX_FAILED_LOGINS):
        accounts.note_failed_login(database, "ana@example.org", now)
    with database.session() as session:
        locked_until = q.get_user_by_email(session, "ana@example.org").locked_until  # type: ignore[union-attr]
    accounts.note_failed_login(database, "ana@example.org", now + timedelta(minutes=5))
    with database.session() as session:
        assert q.get_user_by_email(session, "ana@example.org").locked_until == locked_until  # type: ignore[union-attr]


def test_deactivated_user_cannot_log_in_and_admin_rules(database: Database) -> None:
    admin = make_user(database, "admin@example.org")
    user = accounts.create_user(database, "bo@example.org", "another password", actor=admin)
    accounts.set_active(database, admin, "bo@example.org", False)
    assert accounts.authenticate(database, "bo@example.org", "another password").user is None
    assert accounts.note_login(database, "bo@example.org") is None
    assert accounts.active_user(database, "bo@example.org") is None
    with pytest.raises(AccessDenied):
        accounts.set_role(database, user, "admin@example.org", "user")
    with pytest.raises(ConflictError):
        accounts.set_active(database, admin, "admin@example.org", False)
    with pytest.raises(ValidationError):
        accounts.create_user(database, "not-an-email", "another password", actor=admin)
    with pytest.raises(ValidationError):
        accounts.create_user(database, "cy@example.org", "short", actor=admin)
    accounts.reset_password(database, admin, "bo@example.org", "brand new password")
    accounts.set_active(database, admin, "bo@example.org", True)
    assert accounts.authenticate(database, "bo@example.org", "brand new password").user is not None
    directory = {row["email"]: row for row in accounts.login_directory(database)}
    assert directory["bo@example.org"]["active"] and not directory["bo@example.org"]["locked"]
