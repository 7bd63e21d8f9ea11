"""The Tasks page for a task held at upgrade (issue 20, item 2): it says why the task waits and what resuming
costs; an administrator resumes or cancels it; its owner, not an administrator, cannot resume it."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

import db.queries as q
from db.models import TaskStatus
from tests.app.conftest import AppEnv
from tests.app.test_pages import ADMIN, joined, page, run
from tests.factories import submit, task_row

MEMBER = "member@example.org"


def held_task(app_env: AppEnv) -> str:
    """A task of MEMBER in the state the upgrade leaves an unfinished task of the original system in."""
    app_env.admin(ADMIN)
    task_id = submit(app_env.db, app_env.settings, app_env.member(MEMBER), count=2, images=4)
    with app_env.db.transaction() as session:
        task = q.get_task(session, task_id)
        assert task is not None
        task.status = TaskStatus.HELD.value
    return task_id


def button_keys(at: AppTest) -> set[str]:
    return {str(b.key) for b in at.button}


def test_an_administrator_sees_why_a_held_task_waits_and_resumes_it(app_env: AppEnv) -> None:
    task_id = held_task(app_env)
    at = run(page("tasks", ADMIN))
    assert "held" in "\n".join(m.value for m in at.markdown if "-badge[" in m.value)
    warning = joined(at.warning)
    assert "left running by the previous version" in warning and "may cost money" in warning
    assert {f"resume_{task_id}", f"cancel_{task_id}"} <= button_keys(at)
    assert f"rerun_{task_id}" not in button_keys(at)  # resumed or cancelled first
    at.button(key=f"resume_{task_id}").click()
    run(at)
    assert "Resumed: pending" in joined(at.success)
    task = task_row(app_env.db, task_id)
    assert task.status == TaskStatus.PENDING.value
    assert task.config_snapshot["providers"]["image"] == "offline"  # completed with this process's providers
    assert f"resume_{task_id}" not in button_keys(at)


def test_an_administrator_cancels_a_held_task(app_env: AppEnv) -> None:
    task_id = held_task(app_env)
    at = run(page("tasks", ADMIN))
    at.button(key=f"cancel_{task_id}").click()
    run(at)
    assert task_row(app_env.db, task_id).status == TaskStatus.CANCELLED.value


def test_the_owner_of_a_held_task_cannot_resume_it(app_env: AppEnv) -> None:
    task_id = held_task(app_env)
    at = run(page("tasks", MEMBER))
    assert "An administrator resumes or cancels it" in joined(at.warning)
    assert f"resume_{task_id}" not in button_keys(at)
    assert task_row(app_env.db, task_id).status == TaskStatus.HELD.value
