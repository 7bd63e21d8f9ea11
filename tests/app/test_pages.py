"""Every page through ``streamlit.testing.v1.AppTest`` against a real, fresh SQLite database (DESIGN §7, §8).

``Home.py`` is driven through its forms (first administrator, streamlit-authenticator login with the lock-out
persisted in the database). The other pages are opened with ``switch_page`` in a session marked logged in, as
the login form leaves it (see ``page``); ``direct`` runs a page file on its own. Every run must end without an
exception (``run``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from streamlit.testing.v1 import AppTest

import db.queries as q
from db.models import GenerationTask, TaskStatus
from pipeline.core.domain import CONFIG_TOGGLES, MAX_CONCURRENT_TASKS_KEY
from pipeline.outputs.exports import FORMATS as EXPORT_FORMATS
from pipeline.submit.accounts import MAX_FAILED_LOGINS, set_active
from pipeline.submit.settings import read_settings, setting_history
from tests.app.conftest import AppEnv
from tests.factories import PASSWORD, local_storage, results_of, run_worker, submit, task_row

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 60
USER_KEY = "adg_user_email"  # pages/ui.py: USER_KEY
ADMIN = "admin@example.org"


# --------------------------------------------------------------------------- helpers


def home() -> AppTest:
    return AppTest.from_file(str(ROOT / "Home.py"), default_timeout=TIMEOUT)


def logged_in_home(email: str) -> AppTest:
    """``Home.py`` after a logged-out run (streamlit-authenticator initialises its session keys), marked logged
    in as the login form leaves the session: the next run passes the gate."""
    at = run(home())
    at.session_state["authentication_status"] = True
    at.session_state["username"] = email
    at.session_state[USER_KEY] = email
    return at


def page(name: str, email: str, **query: str) -> AppTest:
    """``pages/<name>.py`` for a logged-in ``email``, opened with ``switch_page`` like a sidebar link.

    Note: with a ``pages/`` folder next to ``Home.py``, AppTest runs every script under Streamlit's MPA-v1
    wrapper (``PagesManager.uses_pages_directory`` is reset before each AppTest run), so a switched-to page runs
    on its own, without ``Home.py``; each page checks the user itself (``ui.current_user``).
    """
    at = logged_in_home(email)
    at.switch_page(f"pages/{name}.py")
    for key, value in query.items():
        at.query_params[key] = value
    return at


def direct(name: str, email: str | None = None) -> AppTest:
    """A page file run on its own, without ``Home.py`` (each page checks the user itself)."""
    at = AppTest.from_file(str(ROOT / "pages" / f"{name}.py"), default_timeout=TIMEOUT)
    if email is not None:
        at.session_state[USER_KEY] = email
    return at


def run(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def by_label(elements: Any, label: str) -> Any:
    matches = [e for e in elements if e.label == label]
    assert matches, f"no widget labelled {label!r} among {[e.label for e in elements]}"
    return matches[0]


def texts(elements: Any) -> list[str]:
    return [str(e.value) for e in elements]


def joined(elements: Any) -> str:
    return "\n".join(texts(elements))


def login(at: AppTest, email: str, password: str) -> AppTest:
    by_label(at.text_input, "E-mail").input(email)
    by_label(at.text_input, "Password").input(password)
    by_label(at.button, "Log in").click()
    return run(at)


def user_row(env: AppEnv, email: str) -> Any:
    with env.db.session() as session:
        user = q.get_user_by_email(session, email)
        assert user is not None
        return user


def query_param(at: AppTest, key: str) -> str:
    value = at.query_params.get(key)
    return ",".join(value) if isinstance(value, list) else str(value or "")


def audit(env: AppEnv, target: str) -> list[q.AuditEntry]:
    with env.db.session() as session:
        return q.list_audit(session, target=target)


# --------------------------------------------------------------------------- Home.py: first run and login


def test_first_run_form_creates_the_administrator(app_env: AppEnv) -> None:
    at = run(home())
    assert "first administrator" in joined(at.info)
    by_label(at.text_input, "E-mail").input(ADMIN)
    by_label(at.text_input, "Password (8 characters or more)").input(PASSWORD)
    by_label(at.text_input, "Repeat password").input(PASSWORD)
    by_label(at.button, "Create administrator").click()
    run(at)
    user = user_row(app_env, ADMIN)
    assert user.role == "admin" and user.is_active
    # The next run shows the login form, not the first-run form.
    assert [t.label for t in at.text_input] == ["E-mail", "Password"]
    assert "Create administrator" not in [b.label for b in at.button]
    assert [e.action for e in audit(app_env, ADMIN)] == ["user-create"]


@pytest.mark.parametrize(
    ("email", "password", "repeat", "message"),
    [
        (ADMIN, PASSWORD, PASSWORD + "x", "do not match"),
        (ADMIN, "short", "short", "at least 8 characters"),
        ("not-an-email", PASSWORD, PASSWORD, "not a valid e-mail"),
    ],
)
def test_first_run_form_refuses_bad_input_and_creates_nothing(
    app_env: AppEnv, email: str, password: str, repeat: str, message: str
) -> None:
    at = run(home())
    by_label(at.text_input, "E-mail").input(email)
    by_label(at.text_input, "Password (8 characters or more)").input(password)
    by_label(at.text_input, "Repeat password").input(repeat)
    by_label(at.button, "Create administrator").click()
    run(at)
    assert message in joined(at.error)
    assert app_env.count("users") == 0
    assert "Create administrator" in [b.label for b in at.button]  # still the first-run form


def test_login_succeeds_and_records_last_login(app_env: AppEnv) -> None:
    app_env.admin(ADMIN)
    at = login(run(home()), ADMIN, PASSWORD)
    assert at.session_state[USER_KEY] == ADMIN
    assert not at.error
    assert "Overview" in texts(at.header)  # the default page ran
    assert user_row(app_env, ADMIN).last_login is not None


def test_wrong_password_shows_an_error_and_persists_the_failure(app_env: AppEnv) -> None:
    app_env.admin(ADMIN)
    at = login(run(home()), ADMIN, "not the password")
    assert "wrong e-mail or password" in joined(at.error)
    assert USER_KEY not in at.session_state
    row = user_row(app_env, ADMIN)
    assert row.failed_logins == 1
    assert row.locked_until is None and row.last_login is None


def test_unknown_email_is_refused_like_a_wrong_password(app_env: AppEnv) -> None:
    app_env.admin(ADMIN)
    at = login(run(home()), "nobody@example.org", PASSWORD)
    assert at.error
    assert USER_KEY not in at.session_state
    assert user_row(app_env, ADMIN).failed_logins == 0


def test_repeated_failures_lock_the_account_in_the_database(app_env: AppEnv) -> None:
    app_env.admin(ADMIN)
    at = run(home())
    for attempt in range(1, MAX_FAILED_LOGINS + 1):
        login(at, ADMIN, f"wrong password {attempt}")
        assert at.error, f"attempt {attempt} showed no error"
        assert USER_KEY not in at.session_state
        if attempt < MAX_FAILED_LOGINS:
            row = user_row(app_env, ADMIN)
            assert (row.failed_logins, row.locked_until) == (attempt, None)
    assert "locked" in joined(at.error)
    row = user_row(app_env, ADMIN)
    assert row.locked_until is not None  # (the counter restarts once the lock is set)
    assert any(e.action == "user-locked" for e in audit(app_env, ADMIN))

    # The right password is refused while locked, in this session and in a new one (the lock is in the DB).
    login(at, ADMIN, PASSWORD)
    assert "locked" in joined(at.error)
    assert USER_KEY not in at.session_state
    fresh = login(run(home()), ADMIN, PASSWORD)
    assert "locked" in joined(fresh.error)
    assert USER_KEY not in fresh.session_state
    assert user_row(app_env, ADMIN).last_login is None


def test_deactivated_account_cannot_log_in(app_env: AppEnv) -> None:
    admin = app_env.admin(ADMIN)
    app_env.member("bea@example.org")
    set_active(app_env.db, admin, "bea@example.org", False)
    at = login(run(home()), "bea@example.org", PASSWORD)
    assert at.error
    assert USER_KEY not in at.session_state


def test_a_page_without_a_logged_in_user_asks_for_login(app_env: AppEnv) -> None:
    app_env.admin(ADMIN)
    for name in ("overview", "new", "tasks", "gallery", "settings", "users"):
        at = run(direct(name))
        assert "Please log in." in joined(at.warning), name
        assert not at.header, name


# --------------------------------------------------------------------------- New task


def _fill_task(at: AppTest, description: str, count: int = 3, images: int = 4) -> None:
    at.text_area(key="nt_description").input(description)
    at.number_input(key="nt_count").set_value(count)
    at.selectbox(key="nt_images").set_value(images)


def test_new_task_submits_a_valid_task(app_env: AppEnv) -> None:
    admin = app_env.admin(ADMIN)
    at = run(page("new", ADMIN))
    assert "New task" in texts(at.header)
    assert at.metric  # the estimate
    _fill_task(at, "urban cyclists in Lisbon, 25–40", count=3, images=8)
    at.text_input(key="nt_seed").input("42")
    by_label(at.button, "Submit task").click()
    run(at)
    assert not at.error
    assert app_env.count("generation_tasks") == 1
    task = _only_task(app_env)
    assert task.task_id in joined(at.success)
    assert task.user_id == admin.id
    assert task.persona_description == "urban cyclists in Lisbon, 25–40"
    assert (task.number_to_generate, task.images_per_persona, task.seed) == (3, 8, 42)
    assert task.status == TaskStatus.PENDING.value
    assert set(task.config_snapshot["toggles"]) == set(CONFIG_TOGGLES)


def _only_task(env: AppEnv) -> Any:
    with env.db.session() as session:
        return session.scalars(sa.select(GenerationTask)).one()


@pytest.mark.parametrize("description", ["", "   \n\t  "])
def test_new_task_with_a_blank_description_shows_an_error_and_writes_nothing(
    app_env: AppEnv, description: str
) -> None:
    app_env.admin(ADMIN)
    at = run(page("new", ADMIN))
    _fill_task(at, description)
    by_label(at.button, "Submit task").click()
    run(at)
    assert "description is empty" in joined(at.error)
    assert not at.success
    assert app_env.count("generation_tasks") == 0


def test_new_task_with_a_bad_seed_shows_an_error_and_writes_nothing(app_env: AppEnv) -> None:
    app_env.admin(ADMIN)
    at = run(page("new", ADMIN))
    _fill_task(at, "urban cyclists in Lisbon")
    at.text_input(key="nt_seed").input("not a number")
    by_label(at.button, "Submit task").click()
    run(at)
    assert "seed" in joined(at.error)
    assert app_env.count("generation_tasks") == 0


def test_new_task_preview_shows_personas_and_stores_nothing(app_env: AppEnv) -> None:
    app_env.admin(ADMIN)
    at = run(page("new", ADMIN))
    _fill_task(at, "retired fishermen in Porto")
    at.slider(key="nt_preview_n").set_value(3)
    at.text_input(key="nt_seed").input("5")
    before = {table: app_env.count(table) for table in ("generation_tasks", "generation_results", "audit_log")}
    by_label(at.button, "Preview (no images, nothing stored)").click()
    run(at)
    assert not at.error
    names = [m.value for m in at.markdown if m.value.startswith("**") and m.value.endswith("**")]
    assert len(names) == 3, names
    assert len(at.tabs) >= 3 * 5  # the four bios and the about text of each persona
    assert any(t.value not in ("", "—") for t in at.text)
    assert {table: app_env.count(table) for table in before} == before
    assert not app_env.media.exists() or not any(path.is_file() for path in app_env.media.rglob("*"))


def test_new_task_preview_with_a_blank_description_shows_an_error(app_env: AppEnv) -> None:
    app_env.admin(ADMIN)
    at = run(page("new", ADMIN))
    by_label(at.button, "Preview (no images, nothing stored)").click()
    run(at)
    assert "description is empty" in joined(at.error)


# --------------------------------------------------------------------------- Tasks


def _badges(at: AppTest) -> str:
    return "\n".join(m.value for m in at.markdown if "-badge[" in m.value)


def test_tasks_page_lists_tasks_with_status_badges(app_env: AppEnv) -> None:
    admin = app_env.admin(ADMIN)
    task_id = submit(app_env.db, app_env.settings, admin, count=2, images=4)
    at = run(page("tasks", ADMIN))
    assert "Tasks" in texts(at.header)
    assert task_id in joined(at.markdown)
    assert "pending" in _badges(at)
    assert any("personas 0/2" in (p.proto.text or "") for p in at.get("progress"))


def test_tasks_page_of_a_user_without_tasks(app_env: AppEnv) -> None:
    app_env.admin(ADMIN)
    at = run(page("tasks", ADMIN))
    assert "No tasks yet" in joined(at.info)


def test_tasks_page_shows_a_completed_task(app_env: AppEnv) -> None:
    admin = app_env.admin(ADMIN)
    task_id = submit(app_env.db, app_env.settings, admin, count=2, images=4)
    run_worker(app_env.db, local_storage(app_env.tmp), app_env.settings)
    at = run(page("tasks", ADMIN))
    assert "completed" in _badges(at)
    assert task_id in joined(at.markdown)
    assert not [b for b in at.button if b.key == f"cancel_{task_id}"]  # a finished task cannot be cancelled


def test_tasks_page_cancels_a_task(app_env: AppEnv) -> None:
    admin = app_env.admin(ADMIN)
    task_id = submit(app_env.db, app_env.settings, admin)
    at = run(page("tasks", ADMIN))
    at.button(key=f"cancel_{task_id}").click()
    run(at)
    assert task_row(app_env.db, task_id).status == TaskStatus.CANCELLED.value
    assert "Cancel" in joined(at.success)
    assert "cancelled" in _badges(at)
    assert not [b for b in at.button if b.key == f"cancel_{task_id}"]


def test_tasks_page_delete_needs_the_confirm_checkbox(app_env: AppEnv) -> None:
    admin = app_env.admin(ADMIN)
    task_id = submit(app_env.db, app_env.settings, admin)
    at = run(page("tasks", ADMIN))
    delete = at.button(key=f"delete_{task_id}")
    assert delete.disabled
    at.checkbox(key=f"confirm_{task_id}").check()
    run(at)
    assert task_row(app_env.db, task_id) is not None  # ticking the box alone deletes nothing
    delete = at.button(key=f"delete_{task_id}")
    assert not delete.disabled
    delete.click()
    run(at)
    assert task_row(app_env.db, task_id) is None
    assert "Deleted" in joined(at.success)
    assert "No tasks yet" in joined(at.info)


def test_tasks_page_shows_only_the_users_own_tasks(app_env: AppEnv) -> None:
    admin = app_env.admin(ADMIN)
    member = app_env.member("bea@example.org")
    admin_task = submit(app_env.db, app_env.settings, admin)
    member_task = submit(app_env.db, app_env.settings, member)
    mine = joined(run(page("tasks", "bea@example.org")).markdown)
    assert member_task in mine and admin_task not in mine
    everyone = joined(run(page("tasks", ADMIN)).markdown)
    assert member_task in everyone and admin_task in everyone


# --------------------------------------------------------------------------- Settings


def test_settings_admin_changes_the_cap_and_a_toggle(app_env: AppEnv) -> None:
    app_env.admin(ADMIN)
    before = read_settings(app_env.db)
    toggle = CONFIG_TOGGLES[2]
    label = toggle.replace("_", " ").capitalize()
    at = run(page("settings", ADMIN))
    assert "Settings" in texts(at.header)
    cap = by_label(at.number_input, "Max concurrent tasks (all workers, all hosts)")
    assert not cap.disabled
    new_cap = before.max_concurrent_tasks % 64 + 2
    cap.set_value(new_cap)
    widget = by_label(at.toggle, label)
    assert not widget.disabled
    widget.set_value(not before.toggles[toggle])
    save = next(b for b in at.button if b.label == "Save")  # the General form's Save comes first
    save.click()
    run(at)
    assert not at.error
    after = read_settings(app_env.db)
    assert after.max_concurrent_tasks == new_cap
    assert after.toggles[toggle] is (not before.toggles[toggle])
    assert {k: v for k, v in after.toggles.items() if k != toggle} == {
        k: v for k, v in before.toggles.items() if k != toggle
    }
    cap_history = setting_history(app_env.db, MAX_CONCURRENT_TASKS_KEY)
    assert cap_history and cap_history[0].actor == ADMIN and cap_history[0].new_value == str(new_cap)
    toggle_history = setting_history(app_env.db, toggle)
    assert toggle_history and toggle_history[0].actor == ADMIN
    # The change history shown on the page lists both changes.
    history = [d.value for d in at.dataframe]
    assert history and set(history[0]["setting"]) >= {MAX_CONCURRENT_TASKS_KEY, toggle}


def test_settings_admin_turns_the_identity_check_on_for_the_next_task(app_env: AppEnv) -> None:
    app_env.admin(ADMIN)
    at = run(page("settings", ADMIN))
    radio = by_label(at.radio, "Identity check (face embeddings on every image)")
    assert radio.value == "auto" and not radio.disabled
    radio.set_value("on")
    next(b for b in at.button if b.label == "Save").click()
    run(at)
    assert not at.error
    assert read_settings(app_env.db).identity_check == "on"
    entry = setting_history(app_env.db, "identity_check")[0]
    assert (entry.actor, entry.old_value, entry.new_value) == (ADMIN, None, "on")


def test_settings_admin_edits_a_bio_prompt_with_history(app_env: AppEnv) -> None:
    app_env.admin(ADMIN)
    at = run(page("settings", ADMIN))
    area = by_label(at.text_area, "Instagram bio prompt")
    area.input("Write a short Instagram bio in {language}.")
    forms_saves = [b for b in at.button if b.label == "Save"]
    forms_saves[2].click()  # General, Facebook, Instagram, …
    run(at)
    assert read_settings(app_env.db).bio_prompts["bio_prompt_instagram"] == "Write a short Instagram bio in {language}."
    assert setting_history(app_env.db, "bio_prompt_instagram")[0].actor == ADMIN


def test_settings_non_admin_reads_with_disabled_inputs_and_cannot_change(app_env: AppEnv) -> None:
    app_env.admin(ADMIN)
    app_env.member("bea@example.org")
    before = read_settings(app_env.db)
    at = run(page("settings", "bea@example.org"))
    assert "Only administrators can change settings" in joined(at.info)
    cap = by_label(at.number_input, "Max concurrent tasks (all workers, all hosts)")
    assert cap.disabled
    assert all(t.disabled for t in at.toggle)
    assert all(a.disabled for a in at.text_area)
    saves = [b for b in at.button if b.label == "Save"]
    assert saves and all(b.disabled for b in saves)
    assert "Test connection" not in [b.label for b in at.button]  # administrators only (issue 20, item 12)
    run(at)
    assert read_settings(app_env.db) == before
    assert app_env.count("audit_log") == 2  # the two user creations only


def test_settings_provider_check(app_env: AppEnv) -> None:
    app_env.admin(ADMIN)
    at = run(page("settings", ADMIN))
    by_label(at.button, "Test connection").click()
    run(at)
    assert at.success or at.error
    assert "offline" in joined(at.markdown)


# --------------------------------------------------------------------------- Users


def test_users_admin_creates_a_user(app_env: AppEnv) -> None:
    app_env.admin(ADMIN)
    at = run(page("users", ADMIN))
    assert "Users" in texts(at.header)
    assert ADMIN in list(at.dataframe[0].value["e-mail"])
    by_label(at.text_input, "E-mail").input("carla@example.org")
    by_label(at.text_input, "Initial password").input("another secret")
    by_label(at.button, "Create").click()
    run(at)
    assert not at.error
    carla = user_row(app_env, "carla@example.org")
    assert carla.role == "user" and carla.is_active
    assert "carla@example.org" in list(at.dataframe[0].value["e-mail"])
    entries = audit(app_env, "carla@example.org")
    assert [(e.action, e.actor) for e in entries] == [("user-create", ADMIN)]


def test_users_admin_gets_an_error_for_a_bad_new_user(app_env: AppEnv) -> None:
    app_env.admin(ADMIN)
    at = run(page("users", ADMIN))
    by_label(at.text_input, "E-mail").input(ADMIN)  # exists already
    by_label(at.text_input, "Initial password").input("another secret")
    by_label(at.button, "Create").click()
    run(at)
    assert "already exists" in joined(at.error)
    assert app_env.count("users") == 1


def test_users_admin_deactivates_and_resets_a_password(app_env: AppEnv) -> None:
    app_env.admin(ADMIN)
    app_env.member("bea@example.org")
    at = run(page("users", ADMIN))
    by_label(at.selectbox, "User").set_value("bea@example.org")
    run(at)
    by_label(at.button, "Deactivate").click()
    run(at)
    assert user_row(app_env, "bea@example.org").is_active is False
    by_label(at.selectbox, "User").set_value("bea@example.org")
    run(at)
    by_label(at.text_input, "New password").input("brand new secret")
    by_label(at.button, "Reset password").click()
    run(at)
    assert "reset" in joined(at.success)
    actions = {e.action for e in audit(app_env, "bea@example.org")}
    assert {"user-active", "user-password"} <= actions


def test_navigation_offers_users_to_admins_only(app_env: AppEnv) -> None:
    app_env.admin(ADMIN)
    app_env.member("bea@example.org")
    for email, role in ((ADMIN, "admin"), ("bea@example.org", "user")):
        at = run(logged_in_home(email))
        assert "Overview" in texts(at.header)  # the default page
        assert f"Signed in as `{email}` ({role})" in texts(at.sidebar.caption)
        at.switch_page("pages/settings.py")  # registered for everyone
        if role == "admin":
            at.switch_page("pages/users.py")
        else:
            with pytest.raises(ValueError, match="Could not find a navigation page"):
                at.switch_page("pages/users.py")


def test_users_page_refuses_a_non_admin(app_env: AppEnv) -> None:
    app_env.admin(ADMIN)
    app_env.member("bea@example.org")
    at = run(direct("users", "bea@example.org"))  # even when run without the navigation (defence in depth)
    assert "Only administrators can manage users." in joined(at.error)
    assert not at.dataframe
    assert "Create" not in [b.label for b in at.button]
    assert not at.text_input
    assert app_env.count("users") == 2


# --------------------------------------------------------------------------- Gallery


@pytest.fixture
def completed_task(app_env: AppEnv) -> str:
    """A small completed offline task owned by the admin (seeded: the same personas every run)."""
    admin = app_env.admin(ADMIN)
    task_id = submit(app_env.db, app_env.settings, admin, count=6, images=4, seed=7)
    run_worker(app_env.db, local_storage(app_env.tmp), app_env.settings)
    assert task_row(app_env.db, task_id).status == TaskStatus.COMPLETED.value
    return task_id


def _genders(env: AppEnv, task_id: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for result in results_of(env.db, task_id):
        counts[result.gender] = counts.get(result.gender, 0) + 1
    return counts


def _match_caption(at: AppTest) -> str:
    captions = [c.value for c in at.caption if " match" in c.value]
    assert captions, texts(at.caption)
    return captions[0]


def test_gallery_shows_the_personas_of_a_completed_task(app_env: AppEnv, completed_task: str) -> None:
    at = run(page("gallery", ADMIN))
    assert "Gallery" in texts(at.header)
    frame = at.dataframe[0].value
    assert len(frame) == 6
    assert set(frame["task"]) == {completed_task}
    assert frame["photo"].map(lambda v: isinstance(v, str) and v.startswith("data:image/")).all()
    assert _match_caption(at).startswith("6 personas match")
    assert query_param(at, "tasks") == completed_task  # the view is a shareable URL
    assert not [b for b in at.button if b.label.startswith("Prepare ")]  # the downloads wait for their tab
    at.session_state["g_tab"] = "Download"
    run(at)
    prepare = [b for b in at.button if b.label.startswith("Prepare ")]
    assert len(prepare) == len(EXPORT_FORMATS)
    at.button(key="dl_csv").click()
    run(at)
    links = [m.value for m in at.markdown if "/downloads/" in m.value]  # a link to the file built on the server
    assert len(links) == 1 and 'download="personas.csv"' in links[0] and "Download CSV" in links[0], links


@pytest.mark.parametrize("how", ["query_params", "sidebar"])
def test_gallery_filter_narrows_the_total(app_env: AppEnv, completed_task: str, how: str) -> None:
    genders = _genders(app_env, completed_task)
    gender, expected = min(genders.items(), key=lambda item: item[1])
    assert expected < 6, genders
    if how == "query_params":
        at = run(page("gallery", ADMIN, tasks=completed_task, gender=gender))
    else:
        at = run(page("gallery", ADMIN))
        assert _match_caption(at).startswith("6 personas match")
        at.multiselect(key="g_gender").set_value([gender])
        run(at)
    assert int(_match_caption(at).split(" ", 1)[0].replace(",", "")) == expected
    frame = at.dataframe[0].value
    assert len(frame) == expected
    assert set(frame["gender"]) == {gender}
    assert query_param(at, "gender") == gender
    assert query_param(at, "tasks") == completed_task


def test_gallery_text_search_and_an_empty_result(app_env: AppEnv, completed_task: str) -> None:
    at = run(page("gallery", ADMIN, tasks=completed_task, q="zzzz-nothing-matches"))
    assert _match_caption(at).startswith("0 personas match")
    assert len(at.dataframe[0].value) == 0


def test_gallery_of_a_user_without_tasks(app_env: AppEnv) -> None:
    app_env.admin(ADMIN)
    at = run(page("gallery", ADMIN))
    assert "No tasks to browse yet." in joined(at.info)


def test_gallery_hides_other_users_tasks(app_env: AppEnv, completed_task: str) -> None:
    app_env.member("bea@example.org")
    # A shared link to someone else's task shows nothing of it.
    at = run(page("gallery", "bea@example.org", tasks=completed_task))
    assert "No tasks to browse yet." in joined(at.info)
    assert not at.dataframe


def test_gallery_card_details_and_curation(app_env: AppEnv, completed_task: str) -> None:
    first = results_of(app_env.db, completed_task)[0]
    at = page("gallery", ADMIN)
    at.session_state["g_tab"] = "Cards"
    run(at)
    at.button(key=f"card_{first.id}").click()
    run(at)
    assert f"{first.firstname} {first.lastname}" in texts(at.subheader)
    captions = [str(image.proto) for image in at.get("image")]
    assert any("base selfie" in caption for caption in captions), captions
    assert sum("img0" in caption for caption in captions) == 4  # the four variations
    at.toggle(key=f"fav_{first.id}").set_value(True)
    at.text_input(key=f"tags_{first.id}").input("cyclist, Lisbon ,  cyclist")
    at.button(key=f"save_{first.id}").click()
    run(at)
    assert not at.error
    [stored] = [r for r in results_of(app_env.db, completed_task) if r.id == first.id]
    assert stored.favorite is True
    assert stored.tags == ["cyclist", "Lisbon"]
    # The curated persona is now found by the favourites filter.
    at = run(page("gallery", ADMIN, tasks=completed_task, favorite="1"))
    assert _match_caption(at).startswith("1 persona matches")
    assert list(at.dataframe[0].value["id"]) == [first.id]


def _draft_page() -> None:
    """A page as Home.py runs it for the signed-in account named in the session state ``who``."""
    import streamlit as st

    from pages import ui

    ui.keep_drafts(st.session_state["who"])
    st.text_input("Population description", key="nt_description")


def test_a_new_task_draft_belongs_to_the_account_that_typed_it() -> None:
    at = AppTest.from_function(_draft_page, default_timeout=TIMEOUT)
    at.session_state["who"] = "ana@example.org"
    run(at)
    at.text_input(key="nt_description").input("retired ferry captains")
    run(at)
    run(at)
    assert at.text_input(key="nt_description").value == "retired ferry captains"
    at.session_state["who"] = "bea@example.org"  # Ana's login expired in this browser; Bea logged in
    run(at)
    assert at.text_input(key="nt_description").value == ""
