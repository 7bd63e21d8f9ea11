"""Model-written text (names, jobs, places, errors) never acts as markdown on a page: a persona named
``![](http://x/y)`` must not make an administrator's browser fetch an outside image, nor ``**bold**`` restyle
the page. Every element that renders markdown shows such text escaped (``pages.ui.plain``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from streamlit.testing.v1 import AppTest

import db.queries as q
from db.models import GenerationResult
from pages.ui import plain
from tests.app.conftest import AppEnv
from tests.factories import local_storage, make_settings, run_worker, submit

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "![](http://x/y)"
BOLD = "**bold**"
LINK = "[click](http://x/z)"


def _markdown_values(at: AppTest) -> list[str]:
    """The source text of every element on the page that Streamlit renders as markdown."""
    groups: list[Any] = [at.markdown, at.caption, at.title, at.header, at.subheader, at.error, at.warning,
                         at.info, at.success, at.toast]
    return [str(element.value) for group in groups for element in group]


def test_model_text_never_reaches_markdown_as_markup(app_env: AppEnv) -> None:
    admin = app_env.admin()
    settings = make_settings(app_env.db_url, app_env.tmp)
    task_id = submit(app_env.db, settings, admin, count=1, images=4)
    run_worker(app_env.db, local_storage(app_env.tmp), settings)
    with app_env.db.transaction() as session:
        task = q.get_task(session, task_id)
        assert task is not None
        session.execute(sa.update(GenerationResult).where(GenerationResult.task_id == task.id).values(
            firstname=IMAGE, lastname=BOLD, job_title=LINK, current_city=IMAGE, ethnicity=BOLD, gender=LINK[:10],
            error=f"model said {IMAGE} {BOLD} {LINK}"))
        result_id = session.scalar(sa.select(GenerationResult.id).where(GenerationResult.task_id == task.id))
    at = AppTest.from_file(str(ROOT / "pages" / "gallery.py"), default_timeout=60)
    at.session_state["adg_user_email"] = admin.email
    at.session_state["g_detail"] = result_id  # the card view, then the persona's detail under it
    at.session_state["g_tab"] = "Cards"
    at.query_params["tasks"] = task_id
    at.run()
    assert not at.exception
    shown = _markdown_values(at)
    assert any(plain(f"{IMAGE} {BOLD}") in value for value in shown), "the name is shown, escaped"
    assert any(plain(LINK) in value for value in shown), "the job is shown, escaped"
    for value in shown:
        assert "![" not in value and "](" not in value, value
        assert BOLD not in value and "<" not in value, value
