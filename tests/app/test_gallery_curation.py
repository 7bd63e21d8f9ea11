"""The gallery's curation form saves only what it changed: two sessions with the same persona open both keep
their change (before, the second save wrote back the tags it had drawn and erased the first one's)."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from tests.app.conftest import AppEnv
from tests.app.test_pages import ADMIN, completed_task, page, run  # noqa: F401  (a fixture, used by name)
from tests.factories import results_of


def open_details(result_id: int) -> AppTest:
    at = page("gallery", ADMIN)
    at.session_state["g_tab"] = "Cards"
    run(at)
    at.button(key=f"card_{result_id}").click()
    return run(at)


def test_two_sessions_curating_one_persona_keep_both_changes(
    app_env: AppEnv, completed_task: str  # noqa: F811
) -> None:
    first = results_of(app_env.db, completed_task)[0]
    one, two = open_details(first.id), open_details(first.id)  # both forms drawn before either saves

    one.text_input(key=f"tags_{first.id}").input("cyclist")
    one.button(key=f"save_{first.id}").click()
    run(one)
    two.toggle(key=f"fav_{first.id}").set_value(True)
    two.button(key=f"save_{first.id}").click()
    run(two)
    assert not one.error and not two.error

    [stored] = [r for r in results_of(app_env.db, completed_task) if r.id == first.id]
    assert (stored.favorite, stored.tags) == (True, ["cyclist"])

    # The first session saves again (a second tag): the favourite it never touched stays set.
    one.text_input(key=f"tags_{first.id}").input("cyclist, Lisbon")
    one.button(key=f"save_{first.id}").click()
    run(one)
    [stored] = [r for r in results_of(app_env.db, completed_task) if r.id == first.id]
    assert (stored.favorite, stored.tags) == (True, ["cyclist", "Lisbon"])
