"""Security in the app: a deactivated user's live session is refused, production needs a cookie key, LLM text
is rendered inert (never as HTML or markdown)."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import db.queries as q
from pipeline.core.config import Settings, reset_settings_cache
from pipeline.core.errors import ConfigError
from pipeline.submit import accounts
from pipeline.submit.settings import read_settings
from pipeline.worker.runtime import open_runtime
from tests.app.conftest import AppEnv, open_persona_with
from tests.factories import PASSWORD, local_storage, make_settings, run_worker, submit

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = "<script>alert('x')</script> **bold** [link](javascript:alert(1)) <img src=x onerror=alert(1)>"


def test_a_deactivated_user_with_a_live_session_is_refused(app_env: AppEnv) -> None:
    admin = app_env.admin()
    member = app_env.member()
    submit(app_env.db, make_settings(app_env.db_url, app_env.tmp), member)
    at = AppTest.from_file(str(ROOT / "pages" / "tasks.py"), default_timeout=60)
    at.session_state["adg_user_email"] = member.email
    at.run()
    assert not at.exception and any(h.value == "Tasks" for h in at.header)
    accounts.set_active(app_env.db, admin, member.email, False)  # an administrator deactivates the account
    at.run()
    assert not at.exception
    assert not any(h.value == "Tasks" for h in at.header)
    assert any("log in" in w.value.lower() for w in at.warning)


def _task_exists(app_env: AppEnv, task_id: str) -> bool:
    with app_env.db.session() as session:
        return q.get_task(session, task_id) is not None


def test_a_demoted_administrator_cannot_delete_from_an_open_tasks_page(app_env: AppEnv) -> None:
    admin = app_env.admin()
    boss = app_env.admin("boss@example.org")
    member = app_env.member()
    settings = make_settings(app_env.db_url, app_env.tmp)
    submit(app_env.db, settings, admin)  # their own task: the list is not empty once they are a user
    task_id = submit(app_env.db, settings, member)  # pending: deletable
    at = AppTest.from_file(str(ROOT / "pages" / "tasks.py"), default_timeout=60)
    at.session_state["adg_user_email"] = admin.email
    at.run()
    assert not at.exception and any(member.email in m.value for m in at.markdown)  # an administrator sees it
    at.checkbox(key=f"confirm_{task_id}").check().run()
    accounts.set_role(app_env.db, boss, admin.email, "user")  # demoted while the tab is open
    at.button(key=f"delete_{task_id}").click().run()  # the button drawn for the administrator
    assert not at.exception
    assert _task_exists(app_env, task_id), "the delete ran with the role of the last full run"
    assert not any(member.email in m.value for m in at.markdown)


def test_a_deactivated_user_cannot_act_from_an_open_tasks_page(app_env: AppEnv) -> None:
    admin = app_env.admin()
    member = app_env.member()
    task_id = submit(app_env.db, make_settings(app_env.db_url, app_env.tmp), member)
    at = AppTest.from_file(str(ROOT / "pages" / "tasks.py"), default_timeout=60)
    at.session_state["adg_user_email"] = member.email
    at.run()
    assert not at.exception
    accounts.set_active(app_env.db, admin, member.email, False)
    at.button(key=f"cancel_{task_id}").click().run()
    assert not at.exception
    with app_env.db.session() as session:
        task = q.get_task(session, task_id)
        assert task is not None and not task.cancel_requested and task.status == "pending"
    assert not any(h.value == "Tasks" for h in at.header)


def test_production_refuses_to_start_without_a_cookie_key(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, app_env="production", database_url=f"sqlite:///{tmp_path / 'p.db'}",  # type: ignore[call-arg]
                        data_dir=tmp_path)
    with pytest.raises(ConfigError, match="AUTH_COOKIE_KEY"):
        open_runtime(settings, start_worker=False)
    assert not (tmp_path / "p.db").exists()  # refused before touching the database
    reset_settings_cache()


def test_llm_text_is_rendered_as_text(app_env: AppEnv) -> None:
    at = open_persona_with(app_env, bio_facebook=SCRIPT, about=SCRIPT)
    assert not at.exception
    assert any(t.value == SCRIPT for t in at.text), "the bio is shown verbatim as text"
    assert not any("<script>" in m.value for m in at.markdown), "LLM text must never reach markdown/HTML"


def test_compare_two_tasks_shows_config_differences(app_env: AppEnv) -> None:
    from pipeline.submit.settings import set_setting_value

    admin = app_env.admin()
    settings = make_settings(app_env.db_url, app_env.tmp)
    first = submit(app_env.db, settings, admin, count=2, images=4)
    set_setting_value(app_env.db, "crop_white_borders", "true", actor=None)  # the second task differs
    second = submit(app_env.db, settings, admin, count=2, images=4)
    run_worker(app_env.db, local_storage(app_env.tmp), settings)
    at = AppTest.from_file(str(ROOT / "pages" / "gallery.py"), default_timeout=60)
    at.session_state["adg_user_email"] = admin.email
    at.query_params["tasks"] = f"{first},{second}"
    at.session_state["g_tab"] = "Compare"
    at.run()
    assert not at.exception
    assert any(m.value == "**Configuration differences**" for m in at.markdown)
    frames = [d.value for d in at.dataframe]
    assert any("toggles.crop_white_borders" in list(f.index) for f in frames)


# --------------------------------------------------------------------------- the login gate (issue 20, items 4, 10)


def _home() -> AppTest:
    at = AppTest.from_file(str(ROOT / "Home.py"), default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _log_in(at: AppTest, email: str, password: str) -> AppTest:
    next(t for t in at.text_input if t.label == "E-mail").input(email)
    next(t for t in at.text_input if t.label == "Password").input(password)
    next(b for b in at.button if b.label == "Log in").click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _signed_in(at: AppTest) -> str | None:
    """The e-mail this session is signed in as after one more run, or None."""
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    try:
        return str(at.session_state["adg_user_email"])
    except KeyError:
        return None


def test_a_signed_in_session_survives_a_strangers_failed_logins(app_env: AppEnv) -> None:
    admin = app_env.admin()
    victim = _log_in(_home(), admin.email, PASSWORD)
    assert _signed_in(victim) == admin.email
    stranger = _home()
    for attempt in range(accounts.MAX_FAILED_LOGINS):
        _log_in(stranger, admin.email, f"guess {attempt}")
    assert accounts.login_block(app_env.db, admin.email)  # the account is locked
    assert _signed_in(victim) == admin.email, "the lock ended the signed-in session"


def test_an_email_stored_with_capitals_logs_in(app_env: AppEnv) -> None:
    app_env.admin()
    with app_env.db.transaction() as session:  # an account of the original system
        q.insert_user(session, "Cy@Example.org", accounts.hash_password(PASSWORD), "user")
    at = _log_in(_home(), "cy@example.ORG", PASSWORD)
    assert not at.error, [e.value for e in at.error]
    assert _signed_in(at) == "cy@example.org"


def test_logging_out_ends_the_accounts_other_sessions(app_env: AppEnv) -> None:
    admin = app_env.admin()
    first = _log_in(_home(), admin.email, PASSWORD)
    second = _log_in(_home(), admin.email, PASSWORD)
    assert _signed_in(first) and _signed_in(second)
    next(b for b in second.button if b.label == "Log out").click()
    second.run()
    assert not _signed_in(second)
    assert not _signed_in(first), "a session (or a copy of its cookie) outlived the logout"


@pytest.mark.parametrize("content", ["", "   \n", "short"])
def test_an_empty_or_short_cookie_key_file_is_replaced(tmp_path: Path, content: str) -> None:
    (tmp_path / "cookie_key").write_text(content)
    settings = Settings(_env_file=None, app_env="development", data_dir=tmp_path)  # type: ignore[call-arg]
    key = settings.cookie_key()
    assert len(key) >= 32
    assert (tmp_path / "cookie_key").read_text() == key
    assert settings.cookie_key() == key  # kept from then on


# --------------------------------------------------------------------------- Settings (issue 20, item 12)


def _settings_page(email: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / "settings.py"), default_timeout=60)
    at.session_state["adg_user_email"] = email
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_only_administrators_can_test_the_connections(app_env: AppEnv) -> None:
    app_env.admin()
    member = app_env.member()
    at = _settings_page(member.email)
    assert not [b for b in at.button if b.label == "Test connection"]
    admin_view = _settings_page("admin@example.org")
    next(b for b in admin_view.button if b.label == "Test connection").click()
    admin_view.run()
    assert not admin_view.exception
    assert admin_view.success or admin_view.error


def test_an_administrator_sets_the_limits_per_user(app_env: AppEnv) -> None:
    app_env.admin()
    at = _settings_page("admin@example.org")
    next(n for n in at.number_input if n.label == "Max unfinished tasks per user").set_value(3)
    next(n for n in at.number_input if n.label == "Max previews per user per hour").set_value(10)
    next(b for b in at.button if b.label == "Save user limits").click()
    at.run()
    assert not at.exception and not at.error
    assert read_settings(app_env.db).user_limits == {"max_running_tasks_per_user": 3,
                                                     "max_previews_per_user_per_hour": 10}
