"""Per-user limits set by an administrator (issue 20, item 12), on SQLite and PostgreSQL: unfinished tasks per
user and previews per user per hour; the settings are validated and audited; "Test connection" is for
administrators and never shows STORAGE_URL's credentials."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

import db.queries as q
from db.models import AuditLog
from db.session import Database
from pipeline.core.errors import AccessDenied, ConflictError, ValidationError
from pipeline.submit import connectivity
from pipeline.submit.settings import get_setting_value, read_settings, set_setting_value
from pipeline.submit.submission import preview_personas
from pipeline.submit.task_control import cancel_task, rerun_task
from pipeline.submit.user_limits import MAX_PREVIEWS_PER_HOUR_KEY, MAX_RUNNING_TASKS_PER_USER_KEY
from tests.factories import make_settings, make_user, submit


def test_a_user_with_as_many_unfinished_tasks_as_allowed_cannot_submit_more(
    database: Database, db_url: str, tmp_path: Path
) -> None:
    admin = make_user(database, "admin@example.org")
    member = make_user(database, "bo@example.org", admin=False)
    settings = make_settings(db_url, tmp_path)
    set_setting_value(database, MAX_RUNNING_TASKS_PER_USER_KEY, "2", admin)
    first = submit(database, settings, member)
    submit(database, settings, member)
    with pytest.raises(ConflictError, match="unfinished task"):
        submit(database, settings, member)
    with pytest.raises(ConflictError, match="unfinished task"):
        rerun_task(database, first, member)  # a re-run is a new task too
    submit(database, settings, admin)  # the limit is per user
    cancel_task(database, first, member)  # finished (cancelled at once: no worker holds it)
    submit(database, settings, member)
    with database.session() as session:
        assert q.count_unfinished_tasks(session, member.id) == 2


def test_previews_per_hour_are_limited(database: Database, db_url: str, tmp_path: Path) -> None:
    admin = make_user(database, "admin@example.org")
    member = make_user(database, "bo@example.org", admin=False)
    settings = make_settings(db_url, tmp_path)
    set_setting_value(database, MAX_PREVIEWS_PER_HOUR_KEY, "2", admin)
    for _ in range(2):
        assert preview_personas(database, settings, "urban cyclists", "English", 1, user=member).personas
    with pytest.raises(ConflictError, match="preview"):
        preview_personas(database, settings, "urban cyclists", "English", 1, user=member)
    assert preview_personas(database, settings, "urban cyclists", "English", 1, user=admin).personas
    with database.transaction() as session:  # an hour later the earlier previews no longer count
        for entry in session.scalars(sa.select(AuditLog).where(AuditLog.action == "preview")):
            entry.created_at -= timedelta(hours=1, minutes=1)
    assert preview_personas(database, settings, "urban cyclists", "English", 1, user=member).personas


@pytest.mark.parametrize("value", ["-1", "two", "1.5", "10001", "", "9" * 40])
def test_a_bad_limit_is_refused_and_nothing_is_written(database: Database, value: str) -> None:
    admin = make_user(database, "admin@example.org")
    for key in (MAX_RUNNING_TASKS_PER_USER_KEY, MAX_PREVIEWS_PER_HOUR_KEY):
        with pytest.raises(ValidationError, match=key):
            set_setting_value(database, key, value, admin)
        assert get_setting_value(database, key) == "0"  # no limit
    with database.session() as session:
        assert q.list_audit(session, target=MAX_RUNNING_TASKS_PER_USER_KEY) == []


def test_limits_are_set_by_administrators_only_and_audited(database: Database) -> None:
    admin = make_user(database, "admin@example.org")
    member = make_user(database, "bo@example.org", admin=False)
    with pytest.raises(AccessDenied):
        set_setting_value(database, MAX_RUNNING_TASKS_PER_USER_KEY, "3", member)
    assert set_setting_value(database, MAX_RUNNING_TASKS_PER_USER_KEY, " 3 ", admin)
    assert read_settings(database).user_limits[MAX_RUNNING_TASKS_PER_USER_KEY] == 3
    with database.session() as session:
        [entry] = q.list_audit(session, target=MAX_RUNNING_TASKS_PER_USER_KEY)
    assert (entry.actor, entry.old_value, entry.new_value) == ("admin@example.org", None, "3")


def test_the_connection_test_is_for_administrators_and_masks_the_storage_url(
    database: Database, db_url: str, tmp_path: Path
) -> None:
    admin = make_user(database, "admin@example.org")
    member = make_user(database, "bo@example.org", admin=False)
    settings = make_settings(db_url, tmp_path)
    with pytest.raises(AccessDenied):
        connectivity.check_providers(settings, member)
    assert connectivity.check_providers(settings, admin)
    secret = "s3://AKIAEXAMPLE:very-secret@bucket/prefix?endpoint=x&token=also-secret"
    assert connectivity.masked_url(secret) == "s3://bucket/prefix"
    storage = connectivity.check_storage(make_settings(db_url, tmp_path, storage_url=secret))
    assert "secret" not in storage.detail and "AKIA" not in storage.detail
