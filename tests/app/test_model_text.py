"""Model-written text (names, jobs, places, errors) never acts as markdown on a page: a persona named
``![](http://x/y)`` must not make an administrator's browser fetch an outside image, nor ``**bold**`` restyle
the page. Every element that renders markdown shows such text escaped (``pages.ui.plain``)."""

from __future__ import annotations

from typing import Any

from streamlit.testing.v1 import AppTest

from pages.ui import plain
from tests.app.conftest import AppEnv, open_persona_with

IMAGE = "![](http://x/y)"
BOLD = "**bold**"
LINK = "[click](http://x/z)"


def _markdown_values(at: AppTest) -> list[str]:
    """The source text of every element on the page that Streamlit renders as markdown."""
    groups: list[Any] = [at.markdown, at.caption, at.title, at.header, at.subheader, at.error, at.warning,
                         at.info, at.success, at.toast]
    return [str(element.value) for group in groups for element in group]


def test_model_text_never_reaches_markdown_as_markup(app_env: AppEnv) -> None:
    at = open_persona_with(app_env, firstname=IMAGE, lastname=BOLD, job_title=LINK, current_city=IMAGE,
                           ethnicity=BOLD, gender=LINK[:10], error=f"model said {IMAGE} {BOLD} {LINK}")
    assert not at.exception
    shown = _markdown_values(at)
    assert any(plain(f"{IMAGE} {BOLD}") in value for value in shown), "the name is shown, escaped"
    assert any(plain(LINK) in value for value in shown), "the job is shown, escaped"
    for value in shown:
        assert "![" not in value and "](" not in value, value
        assert BOLD not in value and "<" not in value, value
