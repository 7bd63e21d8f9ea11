"""The user journey in a real browser (DESIGN §8): first administrator → log in → new task → live progress →
gallery → filter (shareable URL) → CSV download of the filtered view.

Debian Chromium drives ``streamlit run Home.py`` with offline providers and the in-app worker. Screenshots of
every step go to the test's tmp_path, and the last run's are copied to /tmp/e2e-shots/ for the developer.
Navigation regressions follow: shared links through the login, a reload, the first request on a fresh server.
"""

from __future__ import annotations

import csv
import io
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from tests.e2e.conftest import (
    ADMIN,
    PASSWORD,
    Server,
    fill_new_task,
    log_in,
    open_page,
    run_cli,
    sidebar_link,
    signed_in,
    submit_new_task,
    wait_idle,
)

pytestmark = pytest.mark.e2e

DESCRIPTION = "urban cyclists in Lisbon, 25–40"
PERSONAS = 4
IMAGES = 4
COMPLETION_SECONDS = 120
SHOTS_FOR_DEVELOPER = Path("/tmp/e2e-shots")
BOM = b"\xef\xbb\xbf"
AUTH_COOKIE = "adg_auth"  # pages/ui.py: COOKIE_NAME
MATCH = re.compile(r"^([\d,]+) personas? match")
# sidebar facet label -> (query parameter, CSV column)
FACETS = {
    "Gender": ("gender", "gender"),
    "Ethnicity": ("ethnicity", "ethnicity"),
    "City": ("city", "current_city"),
    "State / region": ("state", "current_state"),
}


class Shots:
    """Numbered full-page screenshots of each step."""

    def __init__(self, page: Any, folder: Path) -> None:
        self.page = page
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.taken: list[Path] = []

    def __call__(self, name: str) -> None:
        path = self.folder / f"{len(self.taken) + 1:02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        self.taken.append(path)

    def publish(self) -> None:
        shutil.rmtree(SHOTS_FOR_DEVELOPER, ignore_errors=True)
        SHOTS_FOR_DEVELOPER.mkdir(parents=True, exist_ok=True)
        for path in self.taken:
            shutil.copy2(path, SHOTS_FOR_DEVELOPER / path.name)





def wait_for_cookie(context: Any, name: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while name not in {cookie["name"] for cookie in context.cookies()}:
        if time.monotonic() > deadline:
            pytest.fail(f"no {name} cookie after {timeout} s: {[c['name'] for c in context.cookies()]}")
        time.sleep(0.2)


def main_text(page: Any) -> str:
    return str(page.get_by_test_id("stMain").inner_text())


def match_count(page: Any) -> int:
    caption = page.get_by_text(MATCH).first
    caption.wait_for()
    found = MATCH.match(caption.inner_text().strip())
    assert found, caption.inner_text()
    return int(found.group(1).replace(",", ""))


def wait_for_count(page: Any, predicate: Callable[[int], bool], timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while True:
        count = match_count(page)
        if predicate(count) or time.monotonic() > deadline:
            return count
        page.wait_for_timeout(250)


def create_first_admin(page: Any) -> None:
    """Fill and submit the first-administrator form, then wait for the login form, checking all along that
    the page never shows two e-mail fields (the first-admin form's and the login form's)."""
    page.get_by_label("E-mail").fill(ADMIN)
    page.get_by_label("Password (8 characters or more)").fill(PASSWORD)
    page.get_by_label("Repeat password").fill(PASSWORD)
    page.get_by_role("button", name="Create administrator").click()
    login_button = page.get_by_role("button", name="Log in")
    deadline = time.monotonic() + 30
    while not (login_button.count() and page.get_by_test_id("stStatusWidget").count() == 0):
        assert page.get_by_label("E-mail").count() <= 1, "two e-mail fields at once"
        assert time.monotonic() < deadline, "no login form 30 s after the first administrator was created"
        page.wait_for_timeout(20)
    wait_idle(page)
    assert page.get_by_label("E-mail").count() == 1


def first_admin_then_login_form(tab: Any, server: Server) -> None:
    """Open a fresh server, create the first administrator and wait for the login form."""
    tab.goto(server.url)
    tab.get_by_role("button", name="Create administrator").wait_for()
    wait_idle(tab)
    create_first_admin(tab)


def choose_narrowing_filter(page: Any, total: int) -> tuple[str, str, int]:
    """Pick, in the sidebar, the first facet value that matches fewer than ``total`` personas.

    Returns (facet label, value, expected count); the facet options read "value (count)".
    """
    sidebar = page.get_by_test_id("stSidebar")
    for label in FACETS:
        box = sidebar.get_by_role("combobox", name=label)
        box.click()
        options = page.get_by_role("option")
        options.first.wait_for()
        for option in options.all():
            text = option.inner_text().strip()
            found = re.match(r"^(.*) \((\d+)\)$", text)
            if found and 0 < int(found.group(2)) < total:
                option.click()
                page.keyboard.press("Escape")
                return label, found.group(1), int(found.group(2))
        page.keyboard.press("Escape")
        wait_idle(page)
    pytest.fail(f"no facet value narrows the {total} personas")


def test_journey(page: Any, server: Server, tmp_path: Path) -> None:
    shots = Shots(page, tmp_path / "shots")
    started = time.monotonic()
    try:
        _journey(page, server, shots, tmp_path)
    except Exception:
        try:
            shots("failure")
        finally:
            print(f"streamlit log:\n{server.log_tail()}")
        raise
    finally:
        shots.publish()
    assert time.monotonic() - started < 170


def _journey(page: Any, server: Server, shots: Shots, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    # First run: no account yet, the first administrator is created. This is deliberately the first session of a
    # fresh server process: no list of pages shows before the login, and the first form submitted is kept.
    open_first(page, server.url, page.get_by_role("button", name="Create administrator"), tmp_path / "first-frame.png")
    shots("first-admin-form")
    create_first_admin(page)

    # A wrong password is refused with a message; then the right one logs in.
    shots("login-form")
    page.get_by_label("E-mail").fill(ADMIN)
    page.get_by_role("textbox", name="Password").fill("not the password")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_text("wrong e-mail or password")).to_be_visible()
    wait_idle(page)
    log_in(page)
    page.get_by_text("Signed in as").wait_for()
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()  # the landing page
    wait_idle(page)
    shots("logged-in")
    open_page(page, "New task")

    # New task: 4 personas × 4 images.
    count = fill_new_task(page, DESCRIPTION, PERSONAS, IMAGES)
    expect(page.get_by_label("Population description")).to_have_value(DESCRIPTION)
    expect(count).to_have_value(str(PERSONAS))
    shots("new-task-filled")
    task_id_text = submit_new_task(page)
    shots("task-submitted")

    # Tasks: the fragment refreshes every 3 s until the badge says completed.
    sidebar_link(page, "Tasks").click()
    expect(page.get_by_role("heading", name="Tasks")).to_be_visible()
    main = page.get_by_test_id("stMain")
    expect(main).to_contain_text(task_id_text)
    expect(main).to_contain_text(DESCRIPTION)
    shots("tasks-progress")
    badges = main.locator(".stMarkdownBadge")  # the journey's task is the only one
    deadline = time.monotonic() + COMPLETION_SECONDS
    while not badges.filter(has_text="completed").count():
        if time.monotonic() > deadline:
            pytest.fail(f"task {task_id_text} not completed after {COMPLETION_SECONDS} s:\n{main_text(page)}")
        assert not badges.filter(has_text=re.compile("failed|partial|cancelled")).count(), main_text(page)
        page.wait_for_timeout(500)
    expect(badges).to_have_count(1)
    expect(main).to_contain_text(f"personas {PERSONAS}/{PERSONAS}")
    expect(main).to_contain_text(f"images {PERSONAS * IMAGES}/{PERSONAS * IMAGES}")
    wait_idle(page)
    shots("tasks-completed")

    # Gallery: the task's personas.
    sidebar_link(page, "Gallery").click()
    expect(page.get_by_role("heading", name="Gallery")).to_be_visible()
    total = wait_for_count(page, lambda n: n == PERSONAS)
    assert total == PERSONAS
    expect(page.get_by_test_id("stDataFrame")).to_be_visible()
    assert parse_qs(urlparse(page.url).query).get("tasks") == [task_id_text], page.url
    wait_idle(page)
    shots("gallery")
    page.get_by_role("tab", name="Cards").click()
    expect(page.get_by_role("button", name="Details")).to_have_count(PERSONAS)
    shots("gallery-cards")
    page.get_by_role("button", name="Details").first.click()  # the detail view: base image, bios, fields
    expect(page.get_by_text("base selfie")).to_be_visible()
    expect(page.get_by_role("tab", name="Instagram")).to_be_visible()
    wait_idle(page)
    shots("detail")
    page.get_by_role("tab", name="Table").click()

    # Filter in the sidebar: fewer personas match and the URL carries the filter.
    label, value, expected = choose_narrowing_filter(page, total)
    narrowed = wait_for_count(page, lambda n: n != total)
    assert narrowed == expected, (label, value, narrowed, expected)
    param = FACETS[label][0]
    page.wait_for_function(f"() => new URLSearchParams(window.location.search).has({param!r})")
    query = parse_qs(urlparse(page.url).query)
    assert query.get(param) == [value], page.url
    assert query.get("tasks") == [task_id_text], page.url
    wait_idle(page)
    shots("gallery-filtered")

    # Download: the CSV of the filtered view (UTF-8 BOM, one header row and one row per persona).
    page.get_by_role("tab", name="Download").click()
    expect(page.get_by_text(f"Downloads hold the current filtered view: {narrowed:,} personas")).to_be_visible()
    shots("download-tab")
    page.get_by_role("button", name=re.compile(r"Prepare CSV$")).click()  # built on the server, then a link
    csv_link = page.get_by_role("link", name="Download CSV")
    expect(csv_link).to_have_count(1, timeout=60_000)
    with page.expect_download(timeout=60_000) as download_info:
        csv_link.click()
    download = download_info.value
    target = tmp_path / (download.suggested_filename or "personas.csv")
    download.save_as(str(target))
    data = target.read_bytes()
    assert data.startswith(BOM), data[:20]
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))
    assert len(rows) == narrowed + 1, (len(rows), narrowed)
    header = rows[0]
    assert header[0] == "task_id" and "firstname" in header, header
    assert {row[0] for row in rows[1:]} == {task_id_text}
    column = header.index(FACETS[label][1])
    assert {row[column] for row in rows[1:]} == {value}, [row[column] for row in rows[1:]]
    shots("downloaded")

    # The ZIP of the same view: a manifest and one folder per persona with its details and images.
    page.get_by_role("button", name=re.compile(r"Prepare ZIP$")).click()
    zip_link = page.get_by_role("link", name="Download ZIP")
    expect(zip_link).to_have_count(1, timeout=60_000)
    with page.expect_download(timeout=60_000) as download_info:
        zip_link.click()
    archive = tmp_path / "personas.zip"
    download_info.value.save_as(str(archive))
    import json
    import zipfile

    with zipfile.ZipFile(archive) as zf:
        names = zf.namelist()
        manifest = json.loads(zf.read("manifest.json"))
    folders = {n.split("/", 1)[0] for n in names if "/" in n}
    assert len(folders) == narrowed and manifest["tasks"][0]["task_id"] == task_id_text
    assert sum(n.endswith("/persona.json") for n in names) == narrowed
    assert sum(n.endswith(".jpg") for n in names) >= narrowed * 4

    # Log out: the login form is back and no persona of the dataset is on the page.
    firstnames = [row[header.index("firstname")] for row in rows[1:]]
    page.get_by_role("button", name="Log out").click()
    page.get_by_role("button", name="Log in").wait_for()
    wait_idle(page)
    body = page.inner_text("body")
    assert not any(name in body for name in firstnames), body[:300]
    shots("logged-out")


# --------------------------------------------------------------------------- navigation regressions


def test_shared_link_to_a_page_survives_the_login(browser: Any, server: Server) -> None:
    """/gallery?… opened logged out lands on the gallery after the login, with its query string (DESIGN §7: a view
    is a shareable URL). It once fell back to New task: the first run was interrupted before st.navigation."""
    from playwright.sync_api import expect

    context = browser.new_context()
    try:
        tab = context.new_page()
        first_admin_then_login_form(tab, server)
        tab.goto(f"{server.url}/gallery?gender=f")
        tab.get_by_role("button", name="Log in").wait_for()
        wait_idle(tab)
        signed_in(tab)
        expect(tab.get_by_role("heading", name="Gallery")).to_be_visible(timeout=5_000)
        assert urlparse(tab.url).path == "/gallery", tab.url
        assert parse_qs(urlparse(tab.url).query).get("gender") == ["f"], tab.url
    finally:
        context.close()


def test_a_reload_keeps_the_login_and_the_page(browser: Any, server: Server) -> None:
    from playwright.sync_api import expect

    context = browser.new_context()
    try:
        tab = context.new_page()
        first_admin_then_login_form(tab, server)
        wait_idle(tab)
        signed_in(tab)
        open_page(tab, "Tasks")
        wait_for_cookie(context, AUTH_COOKIE, timeout=10)  # set by streamlit-authenticator's cookie component
        tab.reload()  # a new session: the cookie logs the user in again, on the same page, without an error
        tab.get_by_text("Signed in as").wait_for()
        wait_idle(tab)
        expect(tab.get_by_role("heading", name="Tasks")).to_be_visible(timeout=5_000)
        assert urlparse(tab.url).path == "/tasks", tab.url
        expect(tab.get_by_test_id("stException")).to_have_count(0)
    finally:
        context.close()


def test_a_new_task_draft_stays_while_the_user_looks_at_other_pages_and_goes_at_the_logout(
        browser: Any, server: Server) -> None:
    from playwright.sync_api import expect

    context = browser.new_context()
    try:
        tab = context.new_page()
        first_admin_then_login_form(tab, server)
        wait_idle(tab)
        signed_in(tab)
        open_page(tab, "New task")
        fill_new_task(tab, "retired ferry captains in Lisbon", personas=7, images=4)
        for elsewhere in ("Gallery", "Tasks"):
            open_page(tab, elsewhere)
        open_page(tab, "New task")
        expect(tab.get_by_label("Population description")).to_have_value("retired ferry captains in Lisbon")
        expect(tab.get_by_label("Personas", exact=True)).to_have_value("7")

        tab.get_by_role("button", name="Log out").click()  # the next person at this browser starts afresh
        tab.get_by_role("button", name="Log in").wait_for()
        wait_idle(tab)
        signed_in(tab)
        open_page(tab, "New task")
        expect(tab.get_by_label("Population description")).to_have_value("")
        expect(tab.get_by_label("Personas", exact=True)).to_have_value("20")
    finally:
        context.close()


def open_first(tab: Any, url: str, until: Any, first_frame: Path) -> None:
    """Open ``url`` as the first request of a fresh server and watch every frame until ``until`` shows: no list
    of pages (Streamlit's, which would name the files of pages/) and no page link may appear before the login.
    The first frame is saved to ``first_frame``."""
    tab.goto(url, wait_until="domcontentloaded")  # before the app's script connects and draws anything
    tab.screenshot(path=str(first_frame))
    deadline = time.monotonic() + 60
    while not until.count():
        links = tab.get_by_test_id("stSidebarNav").count() + tab.locator("[data-testid=stSidebar] a").count()
        assert links == 0, f"navigation shown before the login: {tab.inner_text('body')[:300]}"
        assert tab.get_by_text("Please log in.").count() == 0, "a page ran without the login form"
        assert time.monotonic() < deadline, f"{until} not shown within 60 s"
        tab.wait_for_timeout(25)
    wait_idle(tab)
    assert tab.get_by_test_id("stSidebarNav").count() == 0
    for name in ("ui", "Home", "new task", "gallery", "users"):
        assert tab.get_by_role("link", name=name, exact=True).count() == 0, name


@pytest.mark.parametrize("path", ["users", "new"])
def test_first_request_for_a_page_on_a_fresh_server_goes_through_the_gate(
        browser: Any, server: Server, tmp_path: Path, path: str) -> None:
    """A page's URL as the very first request of a fresh server: the first-administrator form, no list of files,
    and no "Page not found" dialog over it (Streamlit shows one when no file of pages/ has the URL's name)."""
    from playwright.sync_api import expect

    context = browser.new_context()
    try:
        tab = context.new_page()
        first_frame = tmp_path / "first-frame.png"
        open_first(tab, f"{server.url}/{path}", tab.get_by_role("button", name="Create administrator"), first_frame)
        SHOTS_FOR_DEVELOPER.mkdir(parents=True, exist_ok=True)
        shutil.copy2(first_frame, SHOTS_FOR_DEVELOPER / f"first-frame-{path}.png")
        # The form's field, waited for: on a loaded machine a page change may redraw the form after the button was
        # first seen (the first run of a fresh server runs the page's file itself, then the gate's run replaces it).
        expect(tab.get_by_label("E-mail")).to_have_count(1, timeout=10_000)
        expect(tab.get_by_role("button", name="Create administrator")).to_be_visible()
        expect(tab.get_by_text("Page not found")).to_have_count(0)
        expect(tab.get_by_label("E-mail")).to_be_editable()  # not behind a dialog
    finally:
        context.close()


def test_first_request_for_a_shared_link_on_a_fresh_server_logs_in_to_that_view(
        browser: Any, start_server: Callable[..., Server], tmp_path: Path) -> None:
    """/gallery?tasks=… as the very first request of a fresh server (an account and a task exist already): the
    login form, then the gallery with that task after the login."""
    from playwright.sync_api import expect

    server = start_server()
    run_cli(server, "create-user", ADMIN, "--admin", "--password", PASSWORD)
    task_id = run_cli(server, "submit", "--user", ADMIN, "--description", DESCRIPTION, "--language", "English",
                      "--count", "1", "--images", "4", "--seed", "3")
    context = browser.new_context()
    try:
        tab = context.new_page()
        first_frame = tmp_path / "first-frame.png"
        open_first(tab, f"{server.url}/gallery?tasks={task_id}", tab.get_by_role("button", name="Log in"),
                   first_frame)
        SHOTS_FOR_DEVELOPER.mkdir(parents=True, exist_ok=True)
        shutil.copy2(first_frame, SHOTS_FOR_DEVELOPER / "first-frame-gallery.png")
        assert parse_qs(urlparse(tab.url).query).get("tasks") == [task_id], tab.url
        signed_in(tab)
        expect(tab.get_by_role("heading", name="Gallery")).to_be_visible(timeout=5_000)
        assert urlparse(tab.url).path == "/gallery", tab.url
        assert parse_qs(urlparse(tab.url).query).get("tasks") == [task_id], tab.url
        expect(tab.get_by_test_id("stMain")).to_contain_text(task_id)  # the task picked in the filter
        expect(sidebar_link(tab, "Gallery")).to_be_visible()
        expect(tab.get_by_test_id("stException")).to_have_count(0)
    finally:
        context.close()
