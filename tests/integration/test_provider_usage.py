"""Provider usage, prices and budgets (issue 21, item 4): every call a task makes is recorded once (across a
resume too) with the tokens the provider reported or none, priced at the configured prices; a task with a budget
stops partial at it; bad prices and budgets are refused; the New task page's estimate uses observed latencies."""

from __future__ import annotations

import subprocess
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import db.queries as q
from db.models import AuditLog, GenerationTask, PersonaStatus, ProviderUsage, Setting, TaskStatus, utcnow
from db.session import Database
from pipeline.core.errors import ValidationError
from pipeline.core.usage import parse_budget, usage_table
from pipeline.providers.registry import ProviderCache
from pipeline.stages.usage import BudgetReached, UsageMeter
from pipeline.submit.estimates import DEFAULT_SECONDS, estimate_task
from pipeline.submit.submission import build_snapshot, submit_task, validate_spec
from pipeline.submit.usage import get_price, set_price
from pipeline.worker.executor import Worker
from tests.factories import (
    cli_in_process,
    local_storage,
    make_settings,
    make_user,
    offline_env,
    results_of,
    run_worker,
    submit,
    task_row,
)
from tests.fakes.servers import (
    CHAT_MODEL,
    FLOWISE_PERSONA_FLOW,
    FLOWISE_PROMPT_FLOW,
    IMAGE_MODEL,
    FakeFlowise,
    FakeOpenAI,
)
from tests.integration.test_executor import referenced_keys, stored_files
from tests.integration.test_provider_limits import OPENAI_KEY, configure, openai_images_settings, wait_for

IMAGE_PRICE = f"price:openai:{IMAGE_MODEL}"
CHAT_PRICE = f"price:openai:{CHAT_MODEL}"
IMAGE_PROVIDER = f"image:openai:{IMAGE_MODEL}"


def usage_of(database: Database, task_id: str) -> dict[str, q.UsageSummary]:
    task = task_row(database, task_id)
    with database.session() as session:
        return {u.provider: u for u in q.usage_by_task(session, [task.id]).get(task.id, [])}


def usage_rows(database: Database) -> int:
    with database.session() as session:
        return int(session.scalar(sa.select(sa.func.count()).select_from(ProviderUsage)) or 0)


# -- budget ----------------------------------------------------------------------------------------------------------
def _run_task_at_a_dime_an_image(database: Database, storage: Any, settings: Any, *, budget: float | None) -> str:
    """Submit 6 personas × 4 images with ``budget``, images priced at $0.10, and run a worker until it is idle."""
    configure(database)
    set_price(database, IMAGE_PRICE, "per_image=0.10", actor=None)
    user = make_user(database)
    spec = validate_spec(user_id=user.id, description="cyclists", language="English", count=6,
                         images_per_persona=4, seed=3)
    task_id = submit_task(database, spec, build_snapshot(database, settings), budget=budget)
    run_worker(database, storage, settings, providers=ProviderCache(settings))
    return task_id


def test_a_task_with_a_budget_stops_partial_at_the_budget(database: Database, db_url: str, tmp_path: Path) -> None:
    """6 personas × 4 images take 12 image calls (a base and a grid each) at $0.10: a budget of $1.15 allows 11.
    The 12th is never sent; the task ends partial with a note, 5 personas complete with their 4 images, the one
    left short failed (no half-written block, no file that no row references), and 11 calls are recorded."""
    storage = local_storage(tmp_path)
    with FakeOpenAI(latency=0.05) as fake:
        settings = openai_images_settings(db_url, tmp_path, fake)
        task_id = _run_task_at_a_dime_an_image(database, storage, settings, budget=parse_budget("1.15"))
    task = task_row(database, task_id)
    assert task.status == TaskStatus.PARTIAL.value, task.error_log
    assert "stopped at the budget: spent $1.10 of $1.15" in task.error_log
    assert len(fake.posts()) == 11
    rows = results_of(database, task_id)
    done = [r for r in rows if r.status == PersonaStatus.COMPLETED.value]
    failed = [r for r in rows if r.status == PersonaStatus.FAILED.value]
    assert (len(done), len(failed)) == (5, 1)
    assert all(r.image_count == 4 for r in done) and failed[0].image_count == 0
    assert "stopped at the budget" in (failed[0].error or "")
    assert referenced_keys(rows) == stored_files(storage.root)
    usage = usage_of(database, task_id)[IMAGE_PROVIDER]
    assert (usage.calls_ok, usage.calls_failed, usage.images, usage.tokens_reported) == (11, 0, 11, 0)
    assert usage.cost == pytest.approx(1.10)


def test_a_task_stopped_at_its_budget_goes_on_when_retried_with_a_higher_one(
        database: Database, db_url: str, tmp_path: Path) -> None:
    """The task above, stopped at $1.10 of $1.15: a retry with a budget not above the spend is refused and changes
    nothing; with $2.00 the persona left short gets its images, and the task completes within the new budget."""
    storage = local_storage(tmp_path)
    with FakeOpenAI(latency=0.05) as fake:
        settings = openai_images_settings(db_url, tmp_path, fake)
        task_id = _run_task_at_a_dime_an_image(database, storage, settings, budget=1.15)
        assert task_row(database, task_id).status == TaskStatus.PARTIAL.value
        env = offline_env(db_url, tmp_path)
        for bad, message in (("1.10", "has spent $1.10 already: its new budget must be more than that, got $1.10"),
                             ("-2", "budget must be an amount in dollars like 12.50")):
            done = cli_in_process(env, "retry", task_id, "--budget", bad)
            assert done.returncode == 2 and message in done.stderr, done.stderr
            task = task_row(database, task_id)
            assert (task.status, task.budget) == (TaskStatus.PARTIAL.value, 1.15)
        done = cli_in_process(env, "retry", task_id, "--budget", "2.00")
        assert done.returncode == 0 and "1 persona(s) queued again" in done.stdout, done.stderr
        run_worker(database, storage, settings, providers=ProviderCache(settings))
    task = task_row(database, task_id)
    assert (task.status, task.budget) == (TaskStatus.COMPLETED.value, 2.0), task.error_log
    rows = results_of(database, task_id)
    assert all(r.status == PersonaStatus.COMPLETED.value and r.image_count == 4 for r in rows)
    assert referenced_keys(rows) == stored_files(storage.root)
    usage = usage_of(database, task_id)[IMAGE_PROVIDER]
    assert usage.calls_failed == 0 and 12 <= usage.calls_ok <= 13 and usage.cost <= 2.0


def test_the_budget_counts_what_earlier_runs_spent(database: Database, db_url: str, tmp_path: Path) -> None:
    """A resumed task's meter starts from the calls its earlier runs recorded: with $0.30 of a $0.40 budget spent
    before, one more $0.10 call is made and the next is refused, with the whole spend in the note."""
    settings = make_settings(db_url, tmp_path)
    task_id = submit(database, settings, make_user(database))
    task = task_row(database, task_id)
    set_price(database, IMAGE_PRICE, "per_image=0.10", actor=None)
    with database.transaction() as session:
        for _ in range(3):
            q.insert_usage(session, task_pk=task.id, task_id=task_id, user_id=task.user_id, worker_id="earlier",
                           provider=IMAGE_PROVIDER, kind="image", ok=True, images=1, input_tokens=None,
                           output_tokens=None, seconds=1.0, cost=0.10, tokens_unpriced=False, created_at=utcnow())
    notes: list[str] = []
    meter = UsageMeter(database, task_pk=task.id, task_id=task_id, user_id=task.user_id, worker_id="now",
                       budget=0.40, note=notes.append)
    with meter.call(IMAGE_PROVIDER, "image") as call, call.timed():
        pass
    with pytest.raises(BudgetReached, match=r"stopped at the budget: spent \$0\.40 of \$0\.40"), \
            meter.call(IMAGE_PROVIDER, "image"):
        pytest.fail("a call over the budget was made")
    with pytest.raises(BudgetReached), meter.call(IMAGE_PROVIDER, "image"):  # and every call after
        pytest.fail("a call over the budget was made")
    assert notes == ["stopped at the budget: spent $0.40 of $0.40"]  # the note once
    assert usage_of(database, task_id)[IMAGE_PROVIDER].calls_ok == 4


def test_a_budget_reached_in_the_data_stage_asks_for_no_more_batches(
    database: Database, db_url: str, tmp_path: Path
) -> None:
    """A chat model at $0.01 a call and a budget of $0.035: three calls are made (batches or grid prompts), then
    none. The task ends partial with one note, asks for no more batches (no "persona batch failed" per batch) and
    keeps every batch that was paid for."""
    with FakeOpenAI(latency=0.05) as fake:
        settings = make_settings(db_url, tmp_path, persona_provider="openai", openai_base_url=fake.url + "/v1",
                                 openai_api_key=OPENAI_KEY, openai_chat_model=CHAT_MODEL)
        configure(database)
        set_price(database, CHAT_PRICE, "per_call=0.01", actor=None)
        user = make_user(database)
        spec = validate_spec(user_id=user.id, description="cyclists", language="English", count=60,
                             images_per_persona=4, seed=5)
        task_id = submit_task(database, spec, build_snapshot(database, settings), budget=0.035)
        run_worker(database, local_storage(tmp_path), settings, providers=ProviderCache(settings))
    task = task_row(database, task_id)
    assert task.status == TaskStatus.PARTIAL.value, task.error_log
    assert task.error_log.count("stopped at the budget: spent $0.03 of $0.035") >= 1
    assert "persona batch" not in task.error_log
    batches = [r for r in fake.posts() if "personas" in str(r.json.get("response_format"))]
    assert 1 <= len(batches) <= 3 and len(fake.posts()) == 3
    assert len(results_of(database, task_id)) == 10 * len(batches)  # every batch paid for is stored
    assert sum(u.calls_ok for u in usage_of(database, task_id).values()) == 3


# -- counted once, across a resume ---------------------------------------------------------------------------------
def _task_threads(task_id: str) -> bool:
    return any(t.name.startswith((f"img-{task_id}", f"grid-{task_id}", f"data-{task_id}"))
               for t in threading.enumerate())


def test_usage_is_counted_once_across_a_lost_lease_and_a_resume(
    database: Database, db_url: str, tmp_path: Path
) -> None:
    """The first worker loses the task mid-way (taken over); its calls still out end and are counted (the provider
    billed them). A second worker resumes it from what was committed. Every call the provider received is one row:
    none lost, none twice."""
    storage = local_storage(tmp_path)
    with FakeOpenAI(latency=0.1) as fake:
        settings = openai_images_settings(db_url, tmp_path, fake, heartbeat_seconds=0.1)
        configure(database, image_concurrency="4")
        set_price(database, IMAGE_PRICE, "per_image=0.04", actor=None)
        task_id = submit(database, settings, make_user(database), count=8, images=8)
        worker = Worker(database, storage, settings, providers=ProviderCache(settings), poll_seconds=0.05,
                        worker_id="first")
        thread = threading.Thread(target=worker.run, kwargs={"until_idle": True}, daemon=True)
        thread.start()
        try:
            wait_for(lambda: len(fake.posts()) >= 8, 60, "eight image calls")
            with database.transaction(immediate=True) as session:  # taken over: the first worker must stop
                row = q.get_task(session, task_id)
                assert row is not None
                row.worker_id, row.lease_expires_at = "other", utcnow() + timedelta(minutes=5)
            wait_for(lambda: not _task_threads(task_id), 60, "the first worker's task threads to end")
        finally:
            worker.stop()
            thread.join(120)
        assert not thread.is_alive()
        first_calls = len(fake.posts())
        assert usage_rows(database) == first_calls
        assert task_row(database, task_id).status != TaskStatus.COMPLETED.value

        with database.transaction(immediate=True) as session:  # the other worker died: its lease expires
            row = q.get_task(session, task_id)
            assert row is not None
            row.lease_expires_at = utcnow() - timedelta(seconds=1)
        run_worker(database, storage, settings, providers=ProviderCache(settings), worker_id="second")
    task = task_row(database, task_id)
    assert task.status == TaskStatus.COMPLETED.value, task.error_log
    calls = len(fake.posts())
    assert calls > first_calls
    usage = usage_of(database, task_id)[IMAGE_PROVIDER]
    assert (usage.calls, usage.calls_ok, usage.images) == (calls, calls, calls)
    assert usage.cost == pytest.approx(0.04 * calls)
    with database.session() as session:
        workers = set(session.scalars(sa.select(ProviderUsage.worker_id)))
        assert session.get(GenerationTask, task.id).attempts == 2
    assert workers == {"first", "second"}


# -- tokens ----------------------------------------------------------------------------------------------------------
def test_tokens_are_the_openai_replies_usage_and_priced(database: Database, db_url: str, tmp_path: Path) -> None:
    with FakeOpenAI() as fake:
        settings = make_settings(db_url, tmp_path, persona_provider="openai", openai_base_url=fake.url + "/v1",
                                 openai_api_key=OPENAI_KEY, openai_chat_model=CHAT_MODEL)
        configure(database)
        set_price(database, CHAT_PRICE, "per_1k_input=0.5 per_1k_output=2", actor=None)
        task_id = submit(database, settings, make_user(database), count=3, images=8)
        run_worker(database, local_storage(tmp_path), settings, providers=ProviderCache(settings))
    assert task_row(database, task_id).status == TaskStatus.COMPLETED.value
    usage = usage_of(database, task_id)
    persona, prompt = usage[f"persona:openai:{CHAT_MODEL}"], usage[f"prompt:openai:{CHAT_MODEL}"]
    assert (persona.calls_ok, prompt.calls_ok) == (1, 6)  # one batch; two grid prompts per persona
    sent_in = sum(u["prompt_tokens"] for u in fake.usage_sent)
    sent_out = sum(u["completion_tokens"] for u in fake.usage_sent)
    assert persona.input_tokens + prompt.input_tokens == sent_in > 0
    assert persona.output_tokens + prompt.output_tokens == sent_out > 0
    assert persona.tokens_reported + prompt.tokens_reported == 7
    assert (persona.cost or 0) + (prompt.cost or 0) == pytest.approx((sent_in * 0.5 + sent_out * 2) / 1000)
    assert persona.tokens_unpriced == prompt.tokens_unpriced == 0
    table = usage_table([persona])
    assert table[0]["tokens"] == f"{persona.input_tokens:,} in / {persona.output_tokens:,} out"


def test_tokens_of_gpt_image_replies_are_recorded(database: Database, db_url: str, tmp_path: Path) -> None:
    with FakeOpenAI() as fake:
        fake.image_usage = {"input_tokens": 50, "output_tokens": 272}
        settings = openai_images_settings(db_url, tmp_path, fake)
        configure(database)
        set_price(database, IMAGE_PRICE, "per_1k_input=5 per_1k_output=40", actor=None)
        task_id = submit(database, settings, make_user(database), count=2, images=4)
        run_worker(database, local_storage(tmp_path), settings, providers=ProviderCache(settings))
    usage = usage_of(database, task_id)[IMAGE_PROVIDER]
    assert (usage.calls_ok, usage.images, usage.tokens_reported) == (4, 4, 4)
    assert (usage.input_tokens, usage.output_tokens) == (200, 1088)
    assert usage.cost == pytest.approx(4 * (50 * 5 + 272 * 40) / 1000)


def test_tokens_stay_unknown_for_flowise_never_guessed(database: Database, db_url: str, tmp_path: Path) -> None:
    """Flowise reports no usage: the tokens are unknown ("—"), not zero; a token price cannot apply, so the cost
    is the part that could be priced, marked "≥"."""
    with FakeFlowise() as flowise:
        settings = make_settings(db_url, tmp_path, persona_provider="flowise", flowise_base_url=flowise.url,
                                 flowise_persona_flow_id=FLOWISE_PERSONA_FLOW,
                                 flowise_prompt_flow_id=FLOWISE_PROMPT_FLOW)
        configure(database)
        set_price(database, f"price:flowise:{FLOWISE_PERSONA_FLOW}", "per_call=0.01 per_1k_output=1", actor=None)
        task_id = submit(database, settings, make_user(database), count=2, images=4)
        run_worker(database, local_storage(tmp_path), settings, providers=ProviderCache(settings))
    usage = usage_of(database, task_id)
    persona, prompt = usage[f"persona:flowise:{FLOWISE_PERSONA_FLOW}"], usage[f"prompt:flowise:{FLOWISE_PROMPT_FLOW}"]
    assert (persona.calls_ok, persona.tokens_reported, persona.tokens_unpriced) == (1, 0, 1)
    assert (prompt.calls_ok, prompt.tokens_reported, prompt.cost, prompt.unpriced_calls) == (2, 0, None, 2)
    assert persona.cost == pytest.approx(0.01)
    rows = {row["provider"]: row for row in usage_table([persona, prompt])}
    assert rows[persona.provider]["tokens"] == rows[prompt.provider]["tokens"] == "—"
    assert rows[persona.provider]["cost"] == "≥ $0.01" and rows[prompt.provider]["cost"] == "—"
    assert persona.as_dict()["input_tokens"] is None  # the manifest says unknown, not 0


# -- bad values ------------------------------------------------------------------------------------------------------
BAD_PRICES = ["abc", "per_image=-1", "per_image=1e3", "per_image=nan", "per_image=inf", "per_image=2000",
              "per_imag=0.1", "per_image=0.1 per_image=0.2", "per_image=", "=0.1", "per_image=0,1"]


def test_bad_prices_are_refused_and_nothing_is_written(database: Database) -> None:
    set_price(database, IMAGE_PRICE, "per_image=0.04", actor=None)
    with database.session() as session:
        audits = session.scalar(sa.select(sa.func.count()).select_from(AuditLog))
    for bad in BAD_PRICES:
        with pytest.raises(ValidationError, match=IMAGE_PRICE):
            set_price(database, IMAGE_PRICE, bad, actor=None)
    for key in ("price:", "price: openai", "price:open ai:x", "prices:openai:x", "price:" + "x" * 300):
        with pytest.raises(ValidationError, match="price:<provider>:<model>"):
            set_price(database, key, "per_call=1", actor=None)
    assert get_price(database, IMAGE_PRICE) == "per_image=0.04"
    with database.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(AuditLog)) == audits
        assert session.scalar(sa.select(sa.func.count()).select_from(Setting)
                              .where(Setting.key.startswith("price:"))) == 1
    set_price(database, IMAGE_PRICE, "off", actor=None)
    assert get_price(database, IMAGE_PRICE) == "off"


@pytest.mark.parametrize("bad", ["0", "-5", "abc", "1e3", "nan", "inf", "99999999", "12,50", "0.000"])
def test_bad_budgets_are_refused(bad: str) -> None:
    with pytest.raises(ValidationError, match="budget must be"):
        parse_budget(bad)


def test_budgets_as_typed() -> None:
    assert parse_budget("12.50") == 12.5 and parse_budget("$3") == 3.0 and parse_budget(" ") is None


def test_the_command_line_takes_a_budget_and_a_price_and_refuses_bad_ones(db_url: str, tmp_path: Path) -> None:
    env = offline_env(db_url, tmp_path)

    def cli(*argv: str) -> subprocess.CompletedProcess[str]:
        return cli_in_process(env, *argv)

    assert cli("create-user", "ana@example.org", "--password", "a long password").returncode == 0
    request = ["submit", "--user", "ana@example.org", "--description", "cyclists", "--language", "English",
               "--count", "2", "--images", "4"]
    done = cli(*request, "--budget", "-3")
    assert done.returncode == 2 and "budget must be" in done.stderr
    done = cli("settings", "set", IMAGE_PRICE, "per_image=lots")
    assert done.returncode == 2 and "must be an amount in dollars" in done.stderr
    database = Database(db_url)
    with database.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(GenerationTask)) == 0
        assert q.get_setting(session, IMAGE_PRICE) is None
    done = cli(*request, "--budget", "12.50")
    assert done.returncode == 0, done.stderr
    assert task_row(database, done.stdout.strip()).budget == 12.5
    assert cli("settings", "set", IMAGE_PRICE, "per_image=0.04").returncode == 0
    assert cli("settings", "get", IMAGE_PRICE).stdout.strip() == "per_image=0.04"


# -- estimate --------------------------------------------------------------------------------------------------------
def _record(database: Database, provider: str, kind: str, seconds: float, n: int, **tokens: Any) -> None:
    with database.transaction() as session:
        for _ in range(n):
            q.insert_usage(session, task_pk=1, task_id="earlier", user_id=None, worker_id="w", provider=provider,
                           kind=kind, ok=True, images=1 if kind == "image" else 0,
                           input_tokens=tokens.get("input_tokens"), output_tokens=tokens.get("output_tokens"),
                           seconds=seconds, cost=None, tokens_unpriced=False, created_at=utcnow())


def test_the_estimate_uses_the_latencies_observed_on_recent_tasks(
    database: Database, db_url: str, tmp_path: Path
) -> None:
    settings = make_settings(db_url, tmp_path, image_provider="openai", openai_api_key=OPENAI_KEY,
                             openai_image_model=IMAGE_MODEL)
    configure(database, image_concurrency="8")
    before = estimate_task(database, settings, 40, 8)
    assert before.kinds["image"].seconds_per_call == DEFAULT_SECONDS[("image", "openai")]
    assert not before.observed and before.cost is None  # no price: unknown, not $0

    _record(database, IMAGE_PROVIDER, "image", 2.0, 20)
    set_price(database, IMAGE_PRICE, "per_image=0.04", actor=None)
    after = estimate_task(database, settings, 40, 8)
    image = after.kinds["image"]
    assert (image.seconds_per_call, image.observed_calls, image.at_once, image.calls) == (2.0, 20, 8, 120)
    assert after.observed
    # 120 image calls of 2 s, 8 at once: the image API is busy 30 s, longer than any persona's chain
    assert after.seconds == pytest.approx(30.0)
    assert after.cost == pytest.approx(120 * 0.04)

    configure(database, image_concurrency="4")  # the limit is the administrator's: read at every estimate
    assert estimate_task(database, settings, 40, 8).seconds == pytest.approx(60.0)


def test_the_estimated_cost_of_a_token_price_uses_observed_tokens(
    database: Database, db_url: str, tmp_path: Path
) -> None:
    settings = make_settings(db_url, tmp_path, persona_provider="openai", openai_api_key=OPENAI_KEY,
                             openai_chat_model=CHAT_MODEL)
    set_price(database, CHAT_PRICE, "per_1k_input=1 per_1k_output=2", actor=None)
    first = estimate_task(database, settings, 10, 4)
    assert first.cost == 0.0 and first.cost_partial  # the token price cannot be estimated yet: said so
    _record(database, f"prompt:openai:{CHAT_MODEL}", "prompt", 1.0, 5, input_tokens=500, output_tokens=100)
    _record(database, f"persona:openai:{CHAT_MODEL}", "persona", 10.0, 5, input_tokens=1000, output_tokens=4000)
    second = estimate_task(database, settings, 10, 4)
    assert not second.cost_partial
    assert second.cost == pytest.approx(1 * (1000 * 1 + 4000 * 2) / 1000 + 10 * (500 * 1 + 100 * 2) / 1000)
