"""Provider usage, prices and budgets in the app (issue 21, item 4): a budget on the New task form (a bad one is
refused and writes nothing) with the estimated cost; prices on the Settings page (a bad one changes nothing); each
task's usage on the Tasks page; the calls of the week on the Overview."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

import db.queries as q
from db.models import GenerationTask, utcnow
from pipeline.core.config import reset_settings_cache
from pipeline.submit.usage import get_price, set_price
from tests.app.conftest import AppEnv
from tests.app.test_pages import ADMIN, by_label, joined, page, run
from tests.factories import submit

IMAGE_MODEL = "gpt-image-1"
PROVIDER = f"image:openai:{IMAGE_MODEL}"
PRICE = f"price:openai:{IMAGE_MODEL}"


@pytest.fixture
def openai_images(app_env: AppEnv, monkeypatch: pytest.MonkeyPatch) -> AppEnv:
    """The app configured for OpenAI images (nothing is called: the pages only read the configuration)."""
    monkeypatch.setenv("IMAGE_PROVIDER", "openai")
    monkeypatch.setenv("OPENAI_IMAGE_MODEL", IMAGE_MODEL)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-usage-pages")
    reset_settings_cache()
    return app_env


def _record(env: AppEnv, task_id: str, *, calls: int, cost: float | None) -> None:
    with env.db.transaction() as session:
        task = q.get_task(session, task_id)
        assert task is not None
        for _ in range(calls):
            q.insert_usage(session, task_pk=task.id, task_id=task_id, user_id=task.user_id, worker_id="w",
                           provider=PROVIDER, kind="image", ok=True, images=1, input_tokens=None, output_tokens=None,
                           seconds=2.0, cost=cost, tokens_unpriced=False, created_at=utcnow())


def test_a_budget_on_the_new_task_form_and_a_bad_one_writes_nothing(openai_images: AppEnv) -> None:
    env = openai_images
    env.admin(ADMIN)
    set_price(env.db, PRICE, "per_image=0.04", actor=None)
    at = run(page("new", ADMIN))
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Cost"] == "$2.40"  # 20 personas × 3 image calls at $0.04 (the form's defaults: 8 images)
    at.text_area(key="nt_description").input("urban cyclists")
    at.text_input(key="nt_budget").input("lots")
    by_label(at.button, "Submit task").click()
    run(at)
    assert "budget must be an amount in dollars like 12.50" in joined(at.error).replace("\\", "")
    assert env.count("generation_tasks") == 0
    at.text_input(key="nt_budget").input("1.50")
    by_label(at.button, "Submit task").click()
    run(at)
    assert not at.error
    with env.db.session() as session:
        assert session.scalars(sa.select(GenerationTask)).one().budget == 1.5


def test_an_administrator_sets_a_price_and_a_bad_one_changes_nothing(openai_images: AppEnv) -> None:
    env = openai_images
    env.admin(ADMIN)
    at = run(page("settings", ADMIN))
    label = f"openai:{IMAGE_MODEL} (image API)"
    by_label(at.text_input, label).input("per_image=0.04")
    by_label(at.button, "Save prices").click()
    run(at)
    assert not at.error
    assert get_price(env.db, PRICE) == "per_image=0.04"
    audits = env.count("audit_log")
    by_label(at.text_input, label).input("per_image=-1")
    by_label(at.button, "Save prices").click()
    run(at)
    assert "must be an amount in dollars" in joined(at.error).replace("\\", "")
    assert get_price(env.db, PRICE) == "per_image=0.04"
    assert env.count("audit_log") == audits


def test_the_tasks_page_shows_a_tasks_usage_and_budget(app_env: AppEnv) -> None:
    admin = app_env.admin(ADMIN)
    task_id = submit(app_env.db, app_env.settings, admin)
    _record(app_env, task_id, calls=3, cost=0.04)
    with app_env.db.transaction() as session:
        task = q.get_task(session, task_id)
        assert task is not None
        task.budget = 5.0
    at = run(page("tasks", ADMIN))
    assert any(e.label == "Provider usage: $0.12 of a budget of $5.00" for e in at.expander)
    tables = [d.value for d in at.dataframe if "calls ok" in d.value.columns]
    assert tables, "no usage table on the Tasks page"
    row = tables[0].set_index("provider").loc[PROVIDER]
    shown = (row["calls ok"], row["calls failed"], row["images"], row["tokens"], row["cost"])
    assert shown == (3, 0, 3, "—", "$0.12")


def test_a_task_stopped_at_its_budget_is_retried_with_a_higher_one_and_a_budget_not_above_the_spend_changes_nothing(
        app_env: AppEnv) -> None:
    admin = app_env.admin(ADMIN)
    task_id = submit(app_env.db, app_env.settings, admin)
    _record(app_env, task_id, calls=10, cost=0.10)  # $1.00 spent of a $1.00 budget
    with app_env.db.transaction() as session:
        task = q.get_task(session, task_id)
        assert task is not None
        task.budget, task.status = 1.0, "partial"
    at = run(page("tasks", ADMIN))
    field = at.text_input(key=f"retry_budget_{task_id}")
    assert field.value == "1.00"
    for bad, message in (("1", "has spent $1.00 already: its new budget must be more than that, got $1.00"),
                         ("lots", "budget must be an amount in dollars like 12.50")):
        at.text_input(key=f"retry_budget_{task_id}").input(bad)
        at.button(key=f"retry_{task_id}").click()
        run(at)
        assert message in joined(at.error).replace("\\", ""), joined(at.error)
        with app_env.db.session() as session:
            task = q.get_task(session, task_id)
            assert task is not None and (task.status, task.budget) == ("partial", 1.0)
    at.text_input(key=f"retry_budget_{task_id}").input("2.50")
    at.button(key=f"retry_{task_id}").click()
    run(at)
    assert not at.error
    with app_env.db.session() as session:
        task = q.get_task(session, task_id)
        assert task is not None and (task.status, task.budget) == ("pending", 2.5)


def test_the_overview_counts_the_provider_calls_of_the_week(app_env: AppEnv) -> None:
    admin = app_env.admin(ADMIN)
    task_id = submit(app_env.db, app_env.settings, admin)
    _record(app_env, task_id, calls=4, cost=None)
    at = run(page("overview", ADMIN))
    tables = [d.value for d in at.dataframe if "calls ok" in d.value.columns]
    assert tables, "no provider calls on the Overview"
    row = tables[0].set_index("provider").loc[PROVIDER]
    assert (row["calls ok"], row["images"], row["cost"]) == (4, 4, "—")  # no price: unknown, not $0
    assert "once providers record their usage" not in joined(at.caption)
