"""The researcher's cockpit in a real browser (issue 22): log in → the Overview is the landing page → New task with
a toggle changed, its live preview redrawn → the task completes → the toggle was frozen with it → the gallery's
Map tab places its personas.

Debian Chromium drives ``streamlit run app.py`` with offline providers and the in-app worker. A failed run
leaves a screenshot of the page in the test's tmp_path.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Server, run_cli

pytestmark = pytest.mark.e2e

ADMIN = "admin@example.org"
PASSWORD = "correct horse battery"
EARLIER = "retired teachers in Porto, 60–75"  # a task made from the CLI before the login
EARLIER_PERSONAS = 3
DESCRIPTION = "graduate students in Berlin, 22–30"
PERSONAS = 6
IMAGES = 4
TOGGLE = "Randomize image style"  # pages/new_task.py labels each toggle by its setting key
COMPLETION_SECONDS = 120


@pytest.fixture
def server(start_server: Callable[..., Server]) -> Server:
    return start_server()


@pytest.fixture
def page(browser: Any, server: Server) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(30_000)
    tab = context.new_page()
    try:
        yield tab
    finally:
        context.close()


def wait_idle(page: Any) -> None:
    """Let the current script run finish (Streamlit shows a 'Running…' status widget while it runs)."""
    page.wait_for_timeout(300)
    page.get_by_test_id("stStatusWidget").wait_for(state="hidden", timeout=30_000)


def main_text(page: Any) -> str:
    return str(page.get_by_test_id("stMain").inner_text())


def sidebar_link(page: Any, title: str) -> Any:
    return page.get_by_test_id("stSidebar").get_by_role("link", name=title, exact=True)


def metric(page: Any, label: str) -> str:
    """The value of the ``st.metric`` labelled ``label`` on the page."""
    box = page.get_by_test_id("stMetric").filter(has=page.get_by_test_id("stMetricLabel").get_by_text(label,
                                                                                                     exact=True))
    return str(box.get_by_test_id("stMetricValue").inner_text()).strip()


def wait_until(condition: Callable[[], bool], what: str, page: Any, timeout: float = 30) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds with the page's text."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not after {timeout} s:\n{main_text(page)[:2000]}")
        page.wait_for_timeout(250)


def test_overview_toggle_preview_task_and_map(page: Any, server: Server, tmp_path: Path) -> None:
    started = time.monotonic()
    try:
        _cockpit(page, server, tmp_path)
    except Exception:
        page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
        print(f"streamlit log:\n{server.log_tail()}")
        raise
    assert time.monotonic() - started < 150


def _cockpit(page: Any, server: Server, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    run_cli(server, "create-user", ADMIN, "--admin", "--password", PASSWORD)
    run_cli(server, "submit", "--user", ADMIN, "--description", EARLIER, "--language", "English",
            "--count", str(EARLIER_PERSONAS), "--images", "4", "--seed", "5")

    # Log in: the Overview is the landing page, with the earlier task counted.
    page.goto(server.url)
    page.get_by_label("E-mail").fill(ADMIN)
    page.get_by_role("textbox", name="Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.get_by_text("Signed in as").wait_for()
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    wait_until(lambda: page.get_by_test_id("stMetric").count() >= 5, "the Overview's headline figures", page)
    assert metric(page, "Tasks") == "1"
    expect(page.get_by_role("heading", name="Running now")).to_be_visible()
    expect(page.get_by_role("heading", name="Quality at a glance")).to_be_visible()
    wait_idle(page)

    # New task: a toggle changed redraws the preview's "after" photo (no provider call).
    sidebar_link(page, "New task").click()
    expect(page.get_by_role("heading", name="New task")).to_be_visible()
    wait_idle(page)
    images = page.get_by_test_id("stImage")
    expect(images).to_have_count(2)
    after_caption = page.get_by_text(re.compile(r"^As the task stores it:"))
    expect(after_caption).to_contain_text("trim only")
    before_src = images.nth(0).locator("img").get_attribute("src")
    after_src = images.nth(1).locator("img").get_attribute("src")
    page.get_by_text(TOGGLE, exact=True).click()
    expect(after_caption).to_contain_text("style")
    wait_idle(page)
    assert images.nth(0).locator("img").get_attribute("src") == before_src  # the sample itself is unchanged
    assert images.nth(1).locator("img").get_attribute("src") != after_src
    expect(page.get_by_text("Set for this task (differs from the global default): randomize image style")
           ).to_be_visible()

    # Submit a small task with the toggle on.
    page.get_by_label("Population description").fill(DESCRIPTION)
    page.get_by_label("Population description").press("Tab")  # a text area commits its value on blur
    wait_idle(page)
    count = page.get_by_label("Personas", exact=True)
    count.fill(str(PERSONAS))
    count.press("Enter")
    wait_idle(page)
    page.get_by_role("combobox", name="Images per persona").click()
    page.get_by_role("option", name=str(IMAGES), exact=True).click()
    wait_idle(page)
    expect(count).to_have_value(str(PERSONAS))
    page.get_by_role("button", name="Submit task").click()
    success = page.get_by_text(re.compile(r"Task \w+ submitted"))
    success.wait_for()
    found = re.search(r"Task (\w+) submitted", success.inner_text())
    assert found, success.inner_text()
    task_id = found.group(1)
    wait_idle(page)

    # The Overview follows the task until it completes (it refreshes itself while a task runs).
    sidebar_link(page, "Overview").click()
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    total = EARLIER_PERSONAS + PERSONAS
    wait_until(lambda: page.get_by_test_id("stMetric").count() >= 5 and metric(page, "Personas") == str(total)
               and metric(page, "Images") == str(total * IMAGES) and metric(page, "Running or waiting") == "0",
               f"the Overview counting {total} personas and no task running", page, COMPLETION_SECONDS)
    assert metric(page, "Tasks") == "2"
    expect(page.get_by_test_id("stMain")).to_contain_text("completed 2")
    wait_idle(page)

    # Tasks: the toggle was frozen with the task (and marked as differing from the global default).
    sidebar_link(page, "Tasks").click()
    expect(page.get_by_role("heading", name="Tasks")).to_be_visible()
    frozen = page.get_by_test_id("stExpander").filter(has_text="Configuration frozen with this task")
    expect(frozen).to_have_count(2)
    card = page.get_by_test_id("stVerticalBlock").filter(has_text=task_id).filter(has=frozen).last
    mine = card.get_by_test_id("stExpander").filter(has_text="Configuration frozen with this task")
    expect(mine).to_contain_text("1 differ from the global defaults")
    mine.locator("summary").click()
    expect(mine.get_by_test_id("stExpanderDetails")).to_contain_text(
        re.compile(re.escape(TOGGLE) + r": on \(global default: off\)"))
    expect(frozen.filter(has_text="differ from the global defaults")).to_have_count(1)  # the earlier kept them
    wait_idle(page)

    # Gallery → Map: one point per persona of the task.
    page.get_by_role("link", name="Open in gallery").and_(page.locator(f"[href$='tasks={task_id}']")).click()
    expect(page.get_by_role("heading", name="Gallery")).to_be_visible()
    expect(page.get_by_text(f"{PERSONAS} personas match")).to_be_visible()
    wait_idle(page)
    page.get_by_role("tab", name="Map").click()
    chart = page.get_by_test_id("stVegaLiteChart")
    chart.wait_for()
    # Vega draws a map of fewer than 2,000 points as SVG: one path per point in the mark group, labelled with
    # its fields (the legend's symbols are in a group of their own).
    points = chart.locator("g.mark-symbol.role-mark > path")
    expect(points).to_have_count(PERSONAS)
    labels = [str(points.nth(i).get_attribute("aria-label")) for i in range(PERSONAS)]
    assert all(f"task_id: {task_id}" in label for label in labels), labels
    expect(chart.locator("g.role-legend")).to_contain_text("gender")
    expect(page.get_by_test_id("stException")).to_have_count(0)
