"""Without a login nothing of a dataset is reachable: no persona text, no image, no media URL (issue 6)."""

from __future__ import annotations

import json
import sqlite3
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Server, run_cli

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e



def _fetch(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""


def test_a_logged_out_visitor_reaches_no_persona_data_or_image(browser: Any, server: Server) -> None:
    warm = browser.new_context()  # the first session starts the app's runtime and its in-app worker
    warm.new_page().goto(server.url)
    warm.pages[0].get_by_role("button", name="Create administrator").wait_for(timeout=30_000)
    warm.close()
    run_cli(server, "create-user", "owner@example.org", "--admin", "--password", "a long password")
    task_id = run_cli(server, "submit", "--user", "owner@example.org", "--description", "urban cyclists in Lisbon",
                      "--language", "English", "--count", "3", "--images", "4", "--seed", "5")
    deadline = time.monotonic() + 90  # the server's in-app worker makes the dataset
    while json.loads(run_cli(server, "status", task_id, "--json"))["status"] != "completed":
        assert time.monotonic() < deadline, "the in-app worker did not finish the task"
        time.sleep(0.25)
    with sqlite3.connect(server.data / "app.db") as conn:
        names = [f"{f} {last}" for f, last in conn.execute("SELECT firstname, lastname FROM generation_results")]
        keys = [k for (k,) in conn.execute("SELECT base_image_url FROM generation_results")]
    assert names and keys

    context = browser.new_context()
    try:
        tab = context.new_page()
        for path in ("/", f"/gallery?tasks={task_id}", "/tasks", f"/gallery?tasks={task_id}&q=cyclists"):
            tab.goto(server.url + path)
            tab.get_by_role("button", name="Log in").wait_for(timeout=30_000)
            tab.wait_for_timeout(1500)
            body = tab.inner_text("body")
            assert not any(name in body for name in names), (path, body[:300])
            assert tab.locator("img[src^='data:'], img[src*='/media/']").count() == 0, path
    finally:
        context.close()
    for key in keys:  # the media folder is never served: no static route reaches an image
        for url in (f"{server.url}/{key}", f"{server.url}/media/{key}", f"{server.url}/app/static/{key}",
                    f"{server.url}/app/static/media/{key}"):
            _status, body = _fetch(url)
            assert not body.startswith((b"\x89PNG", b"\xff\xd8\xff")), url
