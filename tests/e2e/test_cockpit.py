"""The researcher's cockpit in a real browser (issue 22): log in → the Overview is the landing page → New task with
a toggle changed, its live preview redrawn → the task completes → the toggle was frozen with it → the gallery's
Map tab places its personas.

Debian Chromium drives ``streamlit run app.py`` with offline providers and the in-app worker. A failed run
leaves a screenshot of the page in the test's tmp_path.

``SCREENSHOTS_DIR=docs pytest tests/e2e/test_cockpit.py -k screenshots`` also takes the README's screenshots
(overview.png, new_task_preview.png, map.png, 1400 px wide) on a few offline tasks; without the variable that test
is skipped, so the test command never rewrites docs/.
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import conftest
from tests.e2e.conftest import (
    ADMIN,
    PASSWORD,
    Server,
    fill_new_task,
    open_page,
    run_cli,
    sidebar_link,
    submit_new_task,
    wait_idle,
)

pytestmark = pytest.mark.e2e

EARLIER = "retired teachers in Porto, 60–75"  # a task made from the CLI before the login
EARLIER_PERSONAS = 3
DESCRIPTION = "graduate students in Berlin, 22–30"
PERSONAS = 6
IMAGES = 4
TOGGLE = "Randomize image style"  # pages/new.py labels each toggle by its setting key
COMPLETION_SECONDS = 120
SHOTS_ENV = "SCREENSHOTS_DIR"
WIDTH = 1400
# the README's datasets: (description, personas, seed, this task's own settings)
SHOWN_TASKS = (
    ("urban cyclists in Lisbon, 25–40", 16, 11, ()),
    ("retired teachers in Porto, 60–75", 12, 12, ("crop_white_borders=true",)),
    ("nurses on night shifts in Manchester", 14, 13, ("randomize_image_style=true",)),
)
RUNNING = ("first-year students in Toronto, 18–21", 400, 8)  # long enough to be running when the Overview is shot





def main_text(page: Any) -> str:
    return str(page.get_by_test_id("stMain").inner_text())


def metric(page: Any, label: str) -> str | None:
    """The value of the ``st.metric`` labelled ``label``, or None unless exactly one is shown (while a rerun
    replaces a part of the page, Streamlit shows its old elements beside the new ones)."""
    box = page.get_by_test_id("stMetric").filter(has=page.get_by_test_id("stMetricLabel").get_by_text(label,
                                                                                                     exact=True))
    values = box.get_by_test_id("stMetricValue").all_inner_texts()
    return values[0].strip() if len(values) == 1 else None


def wait_until(condition: Callable[[], bool], what: str, page: Any, timeout: float = 30) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds with the page's text."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not after {timeout} s:\n{main_text(page)[:2000]}")
        page.wait_for_timeout(250)


def log_in(page: Any) -> None:
    conftest.log_in(page)
    page.get_by_text("Signed in as").wait_for()


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
    log_in(page)
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    wait_until(lambda: metric(page, "Tasks") == "1", "the Overview counting the earlier task", page)
    expect(page.get_by_role("heading", name="Running now")).to_be_visible()
    expect(page.get_by_role("heading", name="Quality at a glance")).to_be_visible()
    wait_idle(page)

    # New task: a toggle changed redraws the preview's "after" photo (no provider call).
    open_page(page, "New task")
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
    count = fill_new_task(page, DESCRIPTION, PERSONAS, IMAGES)
    expect(count).to_have_value(str(PERSONAS))
    task_id = submit_new_task(page)

    # The Overview follows the task until it completes (it refreshes itself while a task runs).
    sidebar_link(page, "Overview").click()
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    total = EARLIER_PERSONAS + PERSONAS
    wait_until(lambda: metric(page, "Personas") == str(total) and metric(page, "Images") == str(total * IMAGES)
               and metric(page, "Running or waiting") == "0",
               f"the Overview counting {total} personas and no task running", page, COMPLETION_SECONDS)
    wait_idle(page)
    wait_until(lambda: metric(page, "Tasks") == "2", "the Overview counting two tasks", page)
    expect(page.get_by_test_id("stMain")).to_contain_text("completed 2")

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


# --------------------------------------------------------------------------- the README's screenshots


def statuses(server: Server) -> dict[str, str]:
    with sqlite3.connect(server.data / "app.db") as conn:
        return dict(conn.execute("SELECT task_id, status FROM generation_tasks").fetchall())


def images_done(server: Server, task_id: str) -> int:
    with sqlite3.connect(server.data / "app.db") as conn:
        row = conn.execute("SELECT COUNT(*) FROM generation_results r JOIN generation_tasks t ON t.id = r.task_id "
                           "WHERE t.task_id = ? AND r.status = 'completed'", (task_id,)).fetchone()
    return int(row[0])


def shoot(page: Any, path: Path, most: int = 2000) -> None:
    """The whole page at ``WIDTH`` px: the viewport grown to the main area's content (Streamlit scrolls inside
    it, so a full-page screenshot would cut it at the viewport), at most ``most`` px tall."""
    height = page.evaluate("() => document.querySelector('[data-testid=stMainBlockContainer]').scrollHeight")
    page.set_viewport_size({"width": WIDTH, "height": max(900, min(most, int(height) + 40))})
    page.wait_for_timeout(500)  # a resized chart redraws itself
    page.screenshot(path=str(path))


@pytest.mark.skipif(not os.environ.get(SHOTS_ENV),
                    reason=f"{SHOTS_ENV} not set: the README's screenshots are taken only when asked for")
def test_readme_screenshots(page: Any, server: Server) -> None:  # skipped before its server starts
    folder = os.environ[SHOTS_ENV]
    from playwright.sync_api import expect

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    run_cli(server, "create-user", ADMIN, "--admin", "--password", PASSWORD)
    shown = []
    for description, count, seed, own in SHOWN_TASKS:
        sets = [arg for setting in own for arg in ("--set", setting)]
        shown.append(run_cli(server, "submit", "--user", ADMIN, "--description", description, "--language",
                             "English", "--count", str(count), "--images", "4", "--seed", str(seed), *sets))
    page.goto(server.url)  # the app's first session starts its in-app worker
    log_in(page)
    deadline = time.monotonic() + 300
    while any(statuses(server).get(t) != "completed" for t in shown):
        assert time.monotonic() < deadline, statuses(server)
        page.wait_for_timeout(500)
    description, count, images = RUNNING
    running = run_cli(server, "submit", "--user", ADMIN, "--description", description, "--language", "English",
                      "--count", str(count), "--images", str(images), "--seed", "14")
    deadline = time.monotonic() + 120
    while images_done(server, running) < 10:
        assert time.monotonic() < deadline, statuses(server)
        page.wait_for_timeout(500)

    # The Overview with three finished tasks and one running.
    page.set_viewport_size({"width": WIDTH, "height": 1000})
    sidebar_link(page, "Overview").click()
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    expect(page.get_by_text(running).first).to_be_visible()
    wait_idle(page)
    shoot(page, out / "overview.png")

    # New task: both image toggles on, a seed, the before/after preview.
    page.set_viewport_size({"width": WIDTH, "height": 1000})
    open_page(page, "New task")
    page.get_by_label("Population description").fill("graduate students in Berlin, 22–30")
    page.get_by_label("Population description").press("Tab")
    count = page.get_by_label("Personas", exact=True)
    count.fill("24")
    count.press("Enter")
    wait_idle(page)
    seed = page.get_by_role("textbox", name="Seed (optional)")
    seed.fill("7")
    seed.press("Enter")
    wait_idle(page)
    for toggle in ("Crop white borders", TOGGLE):
        page.get_by_text(toggle, exact=True).click()
        wait_idle(page)
    expect(page.get_by_text(re.compile(r"^As the task stores it: border crop \+ style"))).to_be_visible()
    shoot(page, out / "new_task_preview.png")

    # Gallery → Map of the three finished tasks, coloured by ethnicity, a tooltip open.
    page.set_viewport_size({"width": WIDTH, "height": 1000})
    page.goto(f"{server.url}/gallery?tasks={','.join(shown)}")
    expect(page.get_by_role("heading", name="Gallery")).to_be_visible()
    total = sum(count for _, count, _, _ in SHOWN_TASKS)
    expect(page.get_by_text(f"{total} personas match")).to_be_visible()
    wait_idle(page)
    page.get_by_role("tab", name="Map").click()
    chart = page.get_by_test_id("stVegaLiteChart")
    expect(chart.locator("g.mark-symbol.role-mark > path")).to_have_count(total)
    page.get_by_role("combobox", name="Colour by").click()
    page.get_by_role("option", name="ethnicity", exact=True).click()
    wait_idle(page)
    expect(chart.locator("g.role-legend")).to_contain_text("ethnicity")
    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    height = page.evaluate("() => document.querySelector('[data-testid=stMainBlockContainer]').scrollHeight")
    page.set_viewport_size({"width": WIDTH, "height": min(2000, int(height) + 40)})
    page.wait_for_timeout(500)  # the resized chart redraws itself
    points = chart.locator("g.mark-symbol.role-mark > path")
    boxes = [points.nth(i).bounding_box() for i in range(total)]
    area = chart.bounding_box()
    top = [b for b in boxes if b and b["y"] < area["y"] + area["height"] / 3] or [b for b in boxes if b]
    point = min(top, key=lambda b: b["x"])  # its tooltip opens down and right, above the caption
    page.mouse.move(point["x"] + point["width"] / 2, point["y"] + point["height"] / 2)
    page.locator("#vg-tooltip-element.visible").wait_for()
    page.wait_for_timeout(500)  # the tooltip's thumbnail decodes
    page.screenshot(path=str(out / "map.png"))
