"""End-to-end fixtures: Debian Chromium through Playwright, and ``streamlit run Home.py`` on a free port.

Chromium comes from apt (``/usr/bin/chromium``), never from ``playwright install``. Without it the e2e tests
are skipped, unless ``REQUIRE_CHROMIUM=1`` (set by the test command), when they fail: CI cannot pass by
silently skipping the journey.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.factories import cli_in_process

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
STARTUP_SECONDS = 60


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        message = "Debian chromium is not installed (apt-get install chromium)"
        if os.environ.get("REQUIRE_CHROMIUM") == "1":
            pytest.fail(f"{message} but REQUIRE_CHROMIUM=1")
        pytest.skip(message)
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    data: Path

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _healthy(url: str) -> bool:
    for path in ("/_stcore/health", "/healthz"):
        try:
            with urllib.request.urlopen(url + path, timeout=2) as reply:
                if reply.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            continue
    return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)  # its own session: streamlit and nothing else
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def run_cli(server: Server, *argv: str) -> str:
    """``python -m pipeline ARGV`` on the server's database and storage; its standard output, stripped. It runs in
    this process (the app under test is the server's): a fresh interpreter would pay 1.5 s of imports a command."""
    env = {"DATABASE_URL": f"sqlite:///{server.data / 'app.db'}", "STORAGE_URL": f"file://{server.data / 'media'}",
           "DATA_DIR": str(server.data / "data")}
    done = cli_in_process(env, *argv)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start ``streamlit run Home.py`` (fresh SQLite database, file storage, offline providers, in-app worker)."""
    started: list[Server] = []

    def start(**extra_env: str) -> Server:
        data = tmp_path / f"server{len(started)}"
        data.mkdir()
        port = free_port()
        foreign = ("STREAMLIT_", "FLOWISE_", "OPENAI_", "S3_", "FACES_", "AUTH_COOKIE_", "DATABASE_", "STORAGE_")
        env = {key: value for key, value in os.environ.items() if not key.startswith(foreign)}
        env.update(
            DATABASE_URL=f"sqlite:///{data / 'app.db'}",
            STORAGE_URL=f"file://{data / 'media'}",
            DATA_DIR=str(data / "data"),
            PERSONA_PROVIDER="offline",
            IMAGE_PROVIDER="offline",
            WORKER_IN_APP="1",
            LEASE_SECONDS="5",
            HEARTBEAT_SECONDS="1",
            APP_ENV="test",
            OFFLINE_IMAGE_SIDE="256",
            PYTHONUNBUFFERED="1",
        )
        env.update(extra_env)
        log = data / "streamlit.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                 "--server.address", "127.0.0.1", "--server.headless", "true",
                 "--browser.gatherUsageStats", "false"],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        server = Server(url=f"http://127.0.0.1:{port}", process=process, log=log, data=data)
        started.append(server)
        deadline = time.monotonic() + STARTUP_SECONDS
        while not _healthy(server.url):
            if process.poll() is not None:
                pytest.fail(f"streamlit exited with {process.returncode}:\n{server.log_tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"streamlit did not answer within {STARTUP_SECONDS} s:\n{server.log_tail()}")
            time.sleep(0.25)
        return server

    try:
        yield start
    finally:
        for server in started:
            _stop(server.process)


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    """One Chromium for the e2e tests (starting it takes a second); each test opens contexts of its own, which
    share no cookies or storage. Closed after the last of them: Playwright's sync API runs an asyncio loop in the
    main thread while it is open, and later tests call asyncio.run."""
    path = chromium_path()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture
def server(start_server: Callable[..., Server]) -> Server:
    """One fresh app server for the test (tests that need a special one call ``start_server`` themselves)."""
    return start_server()


@pytest.fixture
def page(browser: Any, server: Server) -> Iterator[Any]:
    """A tab 1400 px wide in a context of its own (its own cookies), closed after the test."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
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


ADMIN = "admin@example.org"  # the account the e2e tests create first
PASSWORD = "correct horse battery"


def sidebar_link(page: Any, title: str) -> Any:
    """A page link of the sidebar (drawn by Home.py; Streamlit's own page list is switched off)."""
    return page.get_by_test_id("stSidebar").get_by_role("link", name=title, exact=True)


def log_in(page: Any) -> None:
    """Fill the open login form as ``ADMIN`` and press Log in."""
    page.get_by_label("E-mail").fill(ADMIN)
    page.get_by_role("textbox", name="Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()


def signed_in(page: Any) -> None:
    """Log in as ``ADMIN`` from the open login form and let the first signed-in run finish."""
    log_in(page)
    page.get_by_text("Signed in as").wait_for()
    wait_idle(page)


def open_page(page: Any, title: str) -> None:
    """Follow the sidebar's link to the page ``title`` and let its run finish."""
    from playwright.sync_api import expect

    sidebar_link(page, title).click()
    expect(page.get_by_role("heading", name=title)).to_be_visible()
    wait_idle(page)


def fill_new_task(page: Any, description: str, personas: int, images: int) -> Any:
    """Type a population, a persona count and images per persona into the open New task form, letting each run
    finish; returns the persona count's field."""
    page.get_by_label("Population description").fill(description)
    page.get_by_label("Population description").press("Tab")  # a text area commits its value on blur
    wait_idle(page)
    count = page.get_by_label("Personas", exact=True)
    count.fill(str(personas))
    count.press("Enter")
    wait_idle(page)
    page.get_by_role("combobox", name="Images per persona").click()
    page.get_by_role("option", name=str(images), exact=True).click()
    wait_idle(page)
    return count


def submit_new_task(page: Any) -> str:
    """Press Submit task on the filled New task form; returns the task id its success message names."""
    page.get_by_role("button", name="Submit task").click()
    success = page.get_by_text(re.compile(r"Task \w+ submitted"))
    success.wait_for()
    found = re.search(r"Task (\w+) submitted", success.inner_text())
    assert found, success.inner_text()
    wait_idle(page)
    return found.group(1)

