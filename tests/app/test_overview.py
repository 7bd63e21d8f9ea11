"""AppTests of the overview page (pages/overview.py), the landing page: an empty database, running tasks (the page
then refreshes itself), finished and failed tasks, and what a non-administrator sees."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

import db.queries as q
from pipeline.core.domain import TaskStatus
from tests.app.conftest import AppEnv
from tests.app.test_pages import ADMIN, joined, page, run, texts
from tests.factories import local_storage, run_worker, submit

MEMBER = "bea@example.org"
REFRESHING = "refreshing every"


def _overview(email: str) -> AppTest:
    return run(page("overview", email))


def _markdown(at: AppTest) -> str:
    return joined(at.markdown)


def _fail(env: AppEnv, task_id: str, reason: str) -> None:
    with env.db.transaction() as session:
        task = q.get_task(session, task_id)
        assert task is not None
        q.finish_task(session, task, status=TaskStatus.FAILED.value, errors=[reason])


def test_an_empty_database_invites_a_first_task(app_env: AppEnv) -> None:
    app_env.admin(ADMIN)
    at = _overview(ADMIN)
    assert "Overview" in texts(at.header)
    assert "No tasks yet" in joined(at.info)
    assert not at.metric
    assert REFRESHING not in joined(at.caption)


def test_running_tasks_show_with_their_progress_and_the_page_refreshes_itself(app_env: AppEnv) -> None:
    admin = app_env.admin(ADMIN)
    member = app_env.member(MEMBER)
    mine = submit(app_env.db, app_env.settings, admin, count=3)
    theirs = submit(app_env.db, app_env.settings, member, count=2)
    at = _overview(ADMIN)
    assert REFRESHING in joined(at.caption)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Tasks"] == "2"
    assert metrics["Running or waiting"] == "2"
    assert mine in _markdown(at) and theirs in _markdown(at)
    assert MEMBER in _markdown(at)  # an administrator sees whose task it is
    bars = [bar.text for bar in at.get("progress")]
    assert "personas 0/3" in bars and "personas 0/2" in bars
    assert "Per user" in texts(at.subheader)
    users = at.dataframe[-1].value
    assert set(users["user"]) == {ADMIN, MEMBER}


def test_a_non_administrator_sees_only_their_own_tasks(app_env: AppEnv) -> None:
    admin = app_env.admin(ADMIN)
    member = app_env.member(MEMBER)
    mine = submit(app_env.db, app_env.settings, member, count=2)
    other = submit(app_env.db, app_env.settings, admin, count=3)
    _fail(app_env, other, "the administrator's provider refused")
    at = _overview(MEMBER)
    assert {m.label: m.value for m in at.metric}["Tasks"] == "1"
    assert mine in _markdown(at)
    assert other not in _markdown(at) + joined(at.expander)
    assert "the administrator's provider refused" not in joined(at.code)
    assert "Per user" not in texts(at.subheader)
    assert ADMIN not in _markdown(at)


def test_finished_tasks_show_counts_failures_with_reasons_and_quality(app_env: AppEnv) -> None:
    admin = app_env.admin(ADMIN)
    done = submit(app_env.db, app_env.settings, admin, count=3, images=4)
    run_worker(app_env.db, local_storage(app_env.tmp), app_env.settings)
    failed = submit(app_env.db, app_env.settings, admin, count=2)
    _fail(app_env, failed, "persona provider: HTTP 503 after 4 tries")
    at = _overview(ADMIN)
    assert REFRESHING not in joined(at.caption)  # nothing runs: no refresh
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Personas"] == "3" and metrics["Images"] == "12"
    assert metrics["Running or waiting"] == "0"
    assert any(failed in e.label for e in at.expander)
    assert done not in " ".join(e.label for e in at.expander)
    assert "persona provider: HTTP 503 after 4 tries" in joined(at.code)
    assert "of 3 personas of finished tasks flagged" in joined(at.caption)
    assert "once providers record their usage" in joined(at.caption)  # no made-up numbers
