"""Accounts on both backends: bcrypt, lock-out persisted in the database, the per-client throttle, deactivation,
roles, sessions, audit."""

from __future__ import annotations

import threading
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


# --------------------------------------------------------------------------- issue 20, item 4: lock-out abuse


def test_a_client_that_keeps_failing_waits_longer_each_time(database: Database) -> None:
    make_user(database)
    now = utcnow() + timedelta(days=30)  # clear of other tests' rows
    for _ in range(accounts.FREE_CLIENT_FAILURES):
        assert accounts.authenticate(database, "nobody@example.org", "wrong password", now, client="c1").user is None
    assert accounts.client_wait(database, "c1", now) == 0  # the free failures cost nothing
    accounts.authenticate(database, "nobody@example.org", "wrong password", now, client="c1")
    first = accounts.client_wait(database, "c1", now)
    assert first > 0
    refused = accounts.authenticate(database, "ana@example.org", PASSWORD, now, client="c1")
    assert refused.user is None and "try again" in (refused.message or "")  # nothing is checked meanwhile
    later = now + timedelta(seconds=first)
    accounts.authenticate(database, "nobody@example.org", "wrong password", later, client="c1")
    assert accounts.client_wait(database, "c1", later) == pytest.approx(2 * first)
    # another client is not slowed down, and the account works for it
    assert accounts.authenticate(database, "ana@example.org", PASSWORD, later, client="c2").user is not None


def test_a_stranger_cannot_keep_an_account_locked(database: Database) -> None:
    """One client failing as fast as it is allowed to, for a day, locks the account a few times, not all day."""
    make_user(database)
    start = utcnow() + timedelta(days=60)
    now, locked_minutes = start, 0
    while now < start + timedelta(days=1):
        if accounts.client_wait(database, "stranger", now) == 0:
            accounts.authenticate(database, "ana@example.org", "a guess", now, client="stranger")
        if accounts.login_block(database, "ana@example.org", now):
            locked_minutes += 1
        now += timedelta(minutes=1)
    # Without the client's growing delay the account is locked all day (5 guesses every 15 minutes); with it, the
    # stranger locks it about once every five hours (measured: 90 minutes of 1,440).
    assert locked_minutes <= 144, f"the account was locked {locked_minutes} minutes of 1,440"
    owner = accounts.authenticate(database, "ana@example.org", PASSWORD, now, client="owner")
    assert owner.user is not None


@pytest.mark.real_bcrypt_cost  # a decoy hard-coded to a cheap cost must fail this
def test_unknown_and_known_emails_get_the_same_messages_and_bcrypt_cost(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_user(database)
    costs: list[int] = []
    real_checkpw = accounts.bcrypt.checkpw

    def counting_checkpw(password: bytes, hashed: bytes) -> bool:
        costs.append(int(hashed.split(b"$")[2]))
        return bool(real_checkpw(password, hashed))

    monkeypatch.setattr(accounts.bcrypt, "checkpw", counting_checkpw)
    now = utcnow() + timedelta(days=90)
    answers: dict[str, list[str | None]] = {}
    for email in ("ana@example.org", "nobody@example.org"):
        costs.clear()
        answers[email] = [
            accounts.authenticate(database, email, "wrong password", now, client=f"client of {email}").message
            for _ in range(accounts.MAX_FAILED_LOGINS + 2)
        ]
        # one bcrypt check per attempt, locked or not, at the cost of a stored password
        assert costs == [int(make_hash_cost())] * (accounts.MAX_FAILED_LOGINS + 2), (email, costs)
    assert answers["ana@example.org"] == answers["nobody@example.org"]
    assert "locked" in (answers["nobody@example.org"][-1] or "")


def make_hash_cost() -> int:
    return int(accounts.hash_password("x" * 8).split("$")[2])


def test_a_lock_does_not_end_a_signed_in_session(database: Database) -> None:
    make_user(database)
    since = utcnow()
    now = since + timedelta(days=120)
    for _ in range(accounts.MAX_FAILED_LOGINS):
        accounts.authenticate(database, "ana@example.org", "wrong password", now, client="stranger")
    assert accounts.login_block(database, "ana@example.org", now)
    assert accounts.session_user(database, "ana@example.org", since) is not None


# --------------------------------------------------------------------------- issue 20, item 10: login quirks


@pytest.mark.parametrize("password", [" leading space", "trailing space ", "\tspaced out\t"])
def test_a_password_with_outer_spaces_is_refused_at_creation(database: Database, password: str) -> None:
    admin = make_user(database)
    with pytest.raises(ValidationError, match="space"):
        accounts.create_user(database, "bo@example.org", password, actor=admin)
    with pytest.raises(ValidationError, match="space"):
        accounts.reset_password(database, admin, "ana@example.org", password)
    assert accounts.count_users(database) == 1


def test_emails_are_lower_cased_at_creation_and_at_login(database: Database) -> None:
    admin = make_user(database)
    created = accounts.create_user(database, "  Bo@Example.ORG ", "another password", actor=admin)
    assert created.email == "bo@example.org"
    with database.transaction() as session:  # an account of the original system, stored with capitals
        q.insert_user(session, "Cy@Example.org", accounts.hash_password("third password"), "user")
    assert accounts.authenticate(database, "CY@example.ORG", "third password").user is not None


def test_two_visitors_cannot_both_create_the_first_administrator(database: Database) -> None:
    barrier = threading.Barrier(4)
    outcomes: list[str] = []

    def visitor(n: int) -> None:
        barrier.wait()
        try:
            accounts.create_first_admin(database, f"admin{n}@example.org", "first password")
            outcomes.append("created")
        except ConflictError as exc:
            outcomes.append(str(exc))

    threads = [threading.Thread(target=visitor, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(outcomes) == ["an administrator already exists: log in instead"] * 3 + ["created"]
    assert accounts.count_users(database) == 1


def test_logout_and_password_reset_end_earlier_sessions(database: Database) -> None:
    admin = make_user(database)
    accounts.create_user(database, "bo@example.org", "another password", actor=admin)
    before = utcnow() - timedelta(seconds=1)
    assert accounts.session_user(database, "bo@example.org", before) is not None
    accounts.end_sessions(database, "bo@example.org")
    assert accounts.session_user(database, "bo@example.org", before) is None  # a copied cookie is refused
    assert accounts.session_user(database, "bo@example.org", utcnow() + timedelta(seconds=1)) is not None
    later = utcnow() + timedelta(seconds=1)
    accounts.reset_password(database, admin, "bo@example.org", "brand new password")
    assert accounts.session_user(database, "bo@example.org", later - timedelta(seconds=1)) is None


def test_behind_a_trusted_proxy_the_throttle_counts_the_address_the_proxy_saw() -> None:
    login_client_address = accounts.login_client_address
    # Without the setting, the proxy's own address (shared by every visitor) is all there is to count.
    assert login_client_address("10.0.0.2", "203.0.113.9", trust_proxy=False) == "10.0.0.2"
    # With it, the last hop's entry: what the client wrote before it (a forged first entry) is not trusted.
    assert login_client_address("10.0.0.2", "1.2.3.4, 203.0.113.9", trust_proxy=True) == "203.0.113.9"
    assert login_client_address("10.0.0.2", " ", trust_proxy=True) == "10.0.0.2"
    assert login_client_address(None, None, trust_proxy=True) is None
