"""An open tab follows the account's role (issue 20, item 1): the Tasks list refreshes in a fragment, which does
not pass through Home.py's login gate, and must still re-read the user at every run.

Debian Chromium drives ``streamlit run app.py``; the role is changed in the database behind the open tab.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import pytest

from tests.e2e.conftest import ADMIN, PASSWORD, Server, log_in, run_cli

pytestmark = pytest.mark.e2e

MEMBER = "member@example.org"
AUTH_COOKIE = "adg_auth"  # pages/ui.py: COOKIE_NAME
REFRESH_DEADLINE = 45  # the fragment reruns every 3 s; a loaded machine gets a wide margin




def _main_text(page: Any) -> str:
    return str(page.get_by_test_id("stMain").inner_text())


def _settle(page: Any, timeout: float = 30) -> None:
    """Wait out the login's own full runs (the post-login rerun, the cookie being set): a full run after the
    demotion would pass through the gate and hide what this test looks for. Only fragment runs may follow."""
    deadline = time.monotonic() + timeout
    while AUTH_COOKIE not in {cookie["name"] for cookie in page.context.cookies()}:
        assert time.monotonic() < deadline, f"no {AUTH_COOKIE} cookie {timeout} s after the login"
        page.wait_for_timeout(200)
    page.get_by_test_id("stStatusWidget").wait_for(state="hidden", timeout=30_000)
    page.wait_for_timeout(5000)  # margin for a last full run in flight; too short could only pass, never fail


def test_a_demoted_administrator_stops_seeing_others_tasks_in_the_open_tab(page: Any, server: Server) -> None:
    run_cli(server, "create-user", ADMIN, "--admin", "--password", PASSWORD)
    run_cli(server, "create-user", MEMBER, "--password", PASSWORD)
    run_cli(server, "submit", "--user", MEMBER, "--description", "urban cyclists", "--language", "English",
            "--count", "2", "--images", "4")
    page.goto(server.url + "/tasks")
    log_in(page)
    page.get_by_role("heading", name="Tasks").wait_for()
    page.get_by_text(MEMBER).first.wait_for()  # an administrator sees everyone's tasks
    _settle(page)


    with sqlite3.connect(server.data / "app.db") as conn:  # demoted behind the open tab
        conn.execute("UPDATE users SET role = 'user' WHERE email = ?", (ADMIN,))
    deadline = time.monotonic() + REFRESH_DEADLINE
    while MEMBER in _main_text(page):
        assert time.monotonic() < deadline, f"the tab still lists {MEMBER}'s task {REFRESH_DEADLINE} s after the demotion"
        page.wait_for_timeout(500)
