"""Bad input in the forms: each case gets a clear message and writes nothing (with the CLI's 32 cases in
``tests/integration/test_cli.py``, the table of DESIGN §9 / issue 6)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from pipeline.submit.settings import read_settings
from tests.app.conftest import AppEnv
from tests.app.test_pages import ADMIN, by_label, joined, page, run

TASK_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("empty description", {"description": ""}, "description is empty"),
    ("whitespace description", {"description": " \n\t "}, "description is empty"),
    ("control characters only", {"description": "\x00\x07\x1b"}, "description is empty"),
    ("seed is text", {"seed": "abc"}, "seed"),
    ("seed is negative", {"seed": "-1"}, "seed"),
    ("seed is a fraction", {"seed": "1.5"}, "seed"),
    ("seed too large", {"seed": str(2**63)}, "seed"),
    ("seed is SQL", {"seed": "1; DROP TABLE users"}, "seed"),
    ("targets not JSON", {"targets": "{"}, "not valid JSON"),
    ("targets not an object", {"targets": "[1, 2]"}, "JSON object"),
    ("unknown target", {"targets": '{"height": {"tall": 1}}'}, "unknown target"),
    ("non-binary code as gender key", {"targets": '{"gender": {"nb": 1}}'}, "unknown category"),
    ("negative share", {"targets": '{"ethnicity": {"White": -1}}'}, "non-negative"),
    ("age min above max", {"targets": '{"age": {"min": 60, "max": 20}}'}, "above max"),
    ("age out of range", {"targets": '{"age": {"min": 5, "max": 20}}'}, "13 to 100"),
    ("unknown locale", {"targets": '{"locales": ["xx_YY"]}'}, "unknown locale"),
    # Issue 20, item 8: each of these crashed the page (TypeError, OverflowError, RecursionError, ValueError).
    ("a list with the gender box ticked", {"targets": "[1]", "tick": "nt_t_gender"}, "JSON object"),
    ("null with the age box ticked", {"targets": "null", "tick": "nt_t_age"}, "JSON object"),
    ("a share of 10**400", {"targets": '{"gender": {"f": 1%s, "m": 1}}' % ("0" * 400)}, "up to 1,000,000,000"),
    ("a share of 1e400", {"targets": '{"ethnicity": {"White": 1e400}}'}, "up to 1,000,000,000"),
    ("a 5,000-digit share", {"targets": '{"gender": {"f": %s}}' % ("9" * 5000)}, "number is too long"),
    ("very deep JSON", {"targets": "[" * 9000 + "]" * 9000}, "nested too deeply"),
    ("very deep JSON with a box ticked", {"targets": "[" * 9000 + "]" * 9000, "tick": "nt_t_gender"}, "nested too"),
    ("over-long targets", {"targets": " " * 20_001 + "{}"}, "the limit is 20,000"),
    ("seed of 5,000 digits", {"seed": "9" * 5000}, "seed"),
    ("seed in superscript digits", {"seed": "²"}, "seed"),
]


@pytest.mark.parametrize(("case", "change", "message"), TASK_CASES, ids=[c[0] for c in TASK_CASES])
def test_new_task_bad_input(app_env: AppEnv, case: str, change: dict[str, Any], message: str) -> None:
    app_env.admin(ADMIN)
    at = run(page("new", ADMIN))
    at.text_area(key="nt_description").input(change.get("description", "urban cyclists in Lisbon"))
    if "seed" in change:
        at.text_input(key="nt_seed").input(change["seed"])
    if "targets" in change:
        at.text_area(key="nt_t_json").input(change["targets"])
    if "tick" in change:
        at.checkbox(key=change["tick"]).check()
    by_label(at.button, "Submit task").click()
    run(at)
    shown = shown_text(joined(at.error))
    assert message.lower() in shown.lower(), (case, shown)
    assert not at.success
    assert app_env.count("generation_tasks") == 0


def shown_text(markdown: str) -> str:
    """Markdown as a browser shows it, as far as escapes go: ``ui.plain`` escapes every punctuation mark."""
    return re.sub(r"\\(.)", r"\1", markdown)


def test_settings_bad_prompt_is_refused_and_nothing_changes(app_env: AppEnv) -> None:
    app_env.admin(ADMIN)
    before = read_settings(app_env.db)
    at = run(page("settings", ADMIN))
    at.text_area[0].input("x" * 20_001)  # over the 20,000-character limit
    save = [b for b in at.button if b.label == "Save"]
    save[1].click()  # the first prompt form's Save (the General form's comes first)
    run(at)
    assert at.error, "an over-long prompt must be refused with a message"
    assert read_settings(app_env.db).bio_prompts == before.bio_prompts
    assert app_env.count("audit_log") == 1  # only the admin's creation


USER_CASES = [
    ("not an e-mail", "not-an-email", "a long password", "e-mail"),
    ("e-mail with spaces", "a b@example.org", "a long password", "e-mail"),
    ("short password", "bea@example.org", "short", "password"),
    ("HTML in the e-mail", "<script>@example.org", "a long password", "e-mail"),
]


@pytest.mark.parametrize(("case", "email", "password", "message"), USER_CASES, ids=[c[0] for c in USER_CASES])
def test_users_bad_input(app_env: AppEnv, case: str, email: str, password: str, message: str) -> None:
    app_env.admin(ADMIN)
    at = run(page("users", ADMIN))
    by_label(at.text_input, "E-mail").input(email)
    by_label(at.text_input, "Initial password").input(password)
    by_label(at.button, "Create").click()
    run(at)
    assert message in shown_text(joined(at.error)).lower(), (case, joined(at.error))
    assert app_env.count("users") == 1
