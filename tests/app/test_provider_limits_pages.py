"""The providers' limits in the app (issue 21): an administrator sets them on the Settings page (bad values are
refused and change nothing); the Tasks page shows each provider's calls in flight, limit in force and recent 429s."""

from __future__ import annotations

from datetime import timedelta

import db.queries as q
from db.models import utcnow
from pipeline.submit.settings import read_settings, setting_history
from tests.app.conftest import AppEnv
from tests.app.test_pages import ADMIN, by_label, joined, page, run

PROVIDER = "image:openai:gpt-image-1.5"


def test_an_administrator_sets_a_providers_limits_and_a_bad_value_changes_nothing(app_env: AppEnv) -> None:
    app_env.admin(ADMIN)
    at = run(page("settings", ADMIN))
    by_label(at.number_input, "Image API: calls at once").set_value(24)
    by_label(at.text_input, "Image API: calls per minute (a number, or off)").input("120")
    by_label(at.button, "Save provider limits").click()
    run(at)
    assert not at.error
    limits = read_settings(app_env.db).provider_limits["image"]
    assert (limits.concurrency, limits.rate_per_minute) == (24, 120)
    assert setting_history(app_env.db, "image_concurrency")[0].actor == ADMIN
    audits = app_env.count("audit_log")
    by_label(at.text_input, "Grid-prompt LLM: calls per minute (a number, or off)").input("0")
    by_label(at.button, "Save provider limits").click()
    run(at)
    assert "prompt_rate_per_minute must be between 1 and 100000" in joined(at.error).replace("\\", "")
    assert read_settings(app_env.db).provider_limits["prompt"].rate_per_minute is None
    assert app_env.count("audit_log") == audits


def test_the_tasks_page_shows_each_providers_calls_in_flight_limit_and_recent_429s(app_env: AppEnv) -> None:
    app_env.admin(ADMIN)
    now = utcnow()
    with app_env.db.transaction() as session:
        limits = q.read_provider_limits(session, "image")
        for i in range(3):
            assert q.try_acquire(session, provider=PROVIDER, holder=f"h{i}", worker_id="w1", task_id="t1",
                                 limits=limits, now=now, ttl_seconds=30).wait is None
        q.record_pushback(session, PROVIDER, configured=limits.concurrency, now=now + timedelta(seconds=1),
                          throttled=True, slow=False, retry_after=2.0, cooldown_seconds=2.0)
    at = run(page("tasks", ADMIN))
    rows = [d.value for d in at.dataframe if "provider" in d.value.columns]
    assert rows, "no provider table on the Tasks page"
    table = rows[0].set_index("provider")
    assert table.loc[PROVIDER, "in flight"] == 3
    assert table.loc[PROVIDER, "configured"] == limits.concurrency
    assert table.loc[PROVIDER, "limit in force"] == int(limits.concurrency * q.DECREASE_FACTOR)
    assert table.loc[PROVIDER, "recent 429s"] == 1
