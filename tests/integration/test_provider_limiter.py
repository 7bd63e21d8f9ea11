"""The provider limiter's rules, one at a time, on both databases with a controlled clock: slots expire, the rate
limit counts the calls started in the last minute, the limit drops and grows back, refusals in a row open the
circuit breaker; and a process's waiting calls are served by task in turns."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta

import sqlalchemy as sa

import db.queries as q
from db.models import ProviderSlot, ProviderState, utcnow
from db.session import Database
from pipeline.stages.limits import QUEUE_LOOK_SECONDS, _Gate, provider_key

P = "image:openai:gpt-image-1.5"


def acquire(db: Database, holder: str, now: datetime, limits: q.ProviderLimits, ttl: float = 30) -> float | None:
    with db.transaction() as session:
        return q.try_acquire(session, provider=P, holder=holder, worker_id="w", task_id="t", limits=limits, now=now,
                             ttl_seconds=ttl).wait


def state(db: Database) -> ProviderState:
    with db.session() as session:
        row = session.get(ProviderState, P)
        assert row is not None
        return row


def test_a_slot_of_a_dead_process_expires_and_a_released_one_frees_at_once(database: Database) -> None:
    limits, t0 = q.ProviderLimits(1, None), utcnow()
    assert acquire(database, "dead", t0, limits, ttl=30) is None
    assert acquire(database, "b", t0 + timedelta(seconds=10), limits) == 0.0  # full: wait for a call to end
    assert acquire(database, "b", t0 + timedelta(seconds=31), limits) is None  # never renewed: expired
    with database.transaction() as session:
        q.release_slot(session, "b", t0 + timedelta(seconds=32), keep_for_rate=False)
    assert acquire(database, "c", t0 + timedelta(seconds=32), limits) is None


def test_renewing_clears_the_rows_that_count_no_more(database: Database) -> None:
    """Admissions do not clear old rows (every call pays for an admission); each process's renewal does."""
    limits, t0 = q.ProviderLimits(8, 10), utcnow()
    for holder in ("dead", "done", "recent", "running"):
        assert acquire(database, holder, t0 if holder in ("dead", "done") else t0 + timedelta(seconds=50),
                       limits) is None
    with database.transaction() as session:
        q.release_slot(session, "done", t0 + timedelta(seconds=1), keep_for_rate=True)
        q.release_slot(session, "recent", t0 + timedelta(seconds=51), keep_for_rate=True)
    now = t0 + timedelta(seconds=70)  # "dead" was never renewed: expired at 30 s
    with database.transaction() as session:
        q.renew_slots(session, ["running"], now, now + timedelta(seconds=30))
    with database.session() as session:
        left = set(session.scalars(sa.select(ProviderSlot.holder)))
    assert left == {"recent", "running"}  # "recent" still counts towards the requests per minute


def test_the_rate_limit_counts_the_calls_started_in_the_last_minute(database: Database) -> None:
    limits, t0 = q.ProviderLimits(10, 3), utcnow()
    for i in range(3):
        assert acquire(database, f"h{i}", t0 + timedelta(seconds=i), limits) is None
        with database.transaction() as session:
            q.release_slot(session, f"h{i}", t0 + timedelta(seconds=i, milliseconds=500), keep_for_rate=True)
    wait = acquire(database, "h3", t0 + timedelta(seconds=5), limits)
    assert wait is not None and 54 < wait <= 55  # until the first call is a minute old
    assert acquire(database, "h3", t0 + timedelta(seconds=60, milliseconds=1), limits) is None


def test_pushback_lowers_the_limit_once_per_cooldown_and_successes_grow_it_back_slowly_near_the_ceiling(
        database: Database) -> None:
    t0 = utcnow()

    def pushback(seconds: float) -> None:
        with database.transaction() as session:
            q.record_pushback(session, P, configured=8, now=t0 + timedelta(seconds=seconds), throttled=True,
                              slow=False, retry_after=None, cooldown_seconds=2.0)

    def grow(successes: int, seconds: float) -> tuple[int | None, int | None]:
        with database.transaction() as session:
            q.record_successes(session, P, successes, 8, t0 + timedelta(seconds=seconds))
        row = state(database)
        return row.effective_limit, row.ceiling

    pushback(0)
    assert (state(database).effective_limit, state(database).ceiling) == (5, 8)  # int(8 x 0.7)
    pushback(1)  # the same burst: no second decrease
    assert state(database).effective_limit == 5
    pushback(3)
    assert (state(database).effective_limit, state(database).ceiling) == (3, 5)
    assert grow(3, 4) == (4, 5)  # one window of 3: +1
    assert state(database).refusals_in_row == 0
    assert grow(4 * q.PROBE_WINDOWS - 1, 5) == (4, 5)  # the step to the ceiling takes PROBE_WINDOWS windows
    assert grow(1, 6) == (5, 5)
    assert grow(5 * q.PROBE_WINDOWS, 7) == (6, None)  # and the step past it: then the ceiling is forgotten
    assert grow(6, 8) == (7, None)  # the usual pace again
    assert grow(7, 9) == (None, None)  # back to the configured limit
    assert acquire(database, "x", t0 + timedelta(seconds=10), q.ProviderLimits(8, None)) is None


def test_refusals_in_row_open_the_breaker_for_the_retry_after_then_one_probe(database: Database) -> None:
    t0 = utcnow()
    for i in range(q.BREAKER_REFUSALS):
        with database.transaction() as session:
            q.record_pushback(session, P, configured=8, now=t0 + timedelta(seconds=3 * i), throttled=False,
                              slow=False, retry_after=30.0, cooldown_seconds=2.0)
    opened = t0 + timedelta(seconds=3 * (q.BREAKER_REFUSALS - 1))
    assert state(database).paused_until == opened + timedelta(seconds=30)
    limits = q.ProviderLimits(8, None)
    wait = acquire(database, "a", opened + timedelta(seconds=10), limits)
    assert wait is not None and 19 < wait <= 20
    after = opened + timedelta(seconds=31)
    assert acquire(database, "probe", after, limits) is None
    assert acquire(database, "second", after, limits) == 0.0  # one probe at a time


def served_order(gate: _Gate) -> list[threading.Condition]:
    """Admit the gate's waiting calls one at a time, as the head of the queue is admitted; the order they went in."""
    served = []
    with gate.lock:
        while (head := gate.head()) is not None:
            task = next(t for t, waiting in gate.queues.items() if waiting[0] is head)
            served.append(head)
            gate.leave(task, head, served=True)
    return served


def test_waiting_calls_are_served_by_task_in_turns_the_earliest_task_three_at_a_time() -> None:
    gate = _Gate()
    a = [gate.waiter() for _ in range(7)]  # task 1, submitted first: a burst
    b = [gate.waiter() for _ in range(3)]
    c = [gate.waiter() for _ in range(2)]
    with gate.lock:
        for task, tokens in ((3, c), (1, a), (2, b)):
            for token in tokens:
                gate.join(task, token)
    assert served_order(gate) == [c[0], a[0], a[1], a[2], b[0], c[1], a[3], a[4], a[5], b[1], a[6], b[2]]
    assert not gate.queues and not gate.order


def test_a_later_task_is_served_while_an_earlier_one_has_hundreds_of_calls_waiting() -> None:
    gate = _Gate()
    early = [gate.waiter() for _ in range(300)]
    late = [gate.waiter() for _ in range(5)]
    with gate.lock:
        for token in early:
            gate.join(7, token)
        for token in late:
            gate.join(8, token)
    order = served_order(gate)
    assert [order.index(token) for token in late] == [3, 7, 11, 15, 19]  # one call in four, from the start


def test_a_call_that_ends_wakes_the_head_of_the_queue_not_every_waiting_call() -> None:
    """A worker with hundreds of calls waiting for a provider: each call's end is the head's news only. Waking every
    waiting thread at each end cost more of the worker's CPU than the calls themselves."""
    gate, waiting, ends = _Gate(), 40, 200
    looks = [0]
    lock, admit_all = threading.Lock(), threading.Event()

    def checkpoint() -> None:  # a waiting call looks at its task: once per wake-up
        with lock:
            looks[0] += 1

    threads = [threading.Thread(target=gate.admit, args=(i % 4, lambda: None if admit_all.is_set() else 0.0,
                                                         checkpoint)) for i in range(waiting)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 30
    while sum(len(queue) for queue in gate.queues.values()) < waiting and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sum(len(queue) for queue in gate.queues.values()) == waiting
    with lock:
        looks[0] = 0
    started = time.monotonic()
    for _ in range(ends):
        gate.ended()
        time.sleep(0.005)
    elapsed = time.monotonic() - started
    with lock:
        counted = looks[0]
    admit_all.set()
    gate.ended()
    for thread in threads:
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads) and not gate.queues
    # The head looks once or twice per end; the others once per QUEUE_LOOK_SECONDS (twice for margin). Waking
    # every waiting call at each end makes it ~waiting * ends (8,000).
    assert counted <= 2 * ends + 2 * waiting * (elapsed / QUEUE_LOOK_SECONDS + 1), (counted, elapsed)


def test_a_provider_is_named_by_kind_provider_and_model() -> None:
    snapshot = {"providers": {"persona": "flowise", "prompt": "flowise", "image": "openai"},
                "models": {"image": "gpt-image-1.5", "flowise_persona_flow": "f1", "flowise_prompt_flow": "f2"}}
    assert provider_key("image", snapshot) == "image:openai:gpt-image-1.5"
    assert provider_key("persona", snapshot) == "persona:flowise:f1"
    assert provider_key("prompt", snapshot) == "prompt:flowise:f2"
    assert provider_key("image", {"providers": {"image": "offline"}}) is None  # no network: no shared limit
