"""What a task's provider calls use and cost, and its budget (issue 21).

Every call to a network provider through ``TaskContext.provider_call`` is one ``provider_usage`` row, written in a
transaction of its own as soon as the call ends (its provider slot given back): before the stage commits the work the
call paid for, and whether or not it ever does. What is counted:

- a call that ended (succeeded, failed or was refused) is counted once, by the worker that made it, lease or no
  lease: the provider billed it whatever became of its result. A resumed task makes new calls for the work that was
  not committed, and they are new rows: a task's usage is every call it made over all its runs, never one call twice.
- a call whose process died before its row was committed (killed mid-call, or in the milliseconds between the reply
  and the insert) is not counted: at most the calls in flight at the crash.
- the tokens are the provider's own count (``pipeline.providers.http.report_usage``), or unknown; the cost is at the
  prices of the moment of the call (``pipeline.core.usage.call_cost``). Offline providers call no network and are
  not recorded.

The budget: before a call waits for its provider's slot, its price is reserved. The task's spend over all its runs, plus
the prices reserved by its calls in flight, plus this call's price must stay within the budget, or the call is not
made and the task stops calling providers (``BudgetReached``: the stages end it as for a provider that fails, so
nothing is half-written). A call's price before it is made is its price per call and per image, plus for a token
price the tokens of the task's earlier calls to that provider on average (none before the first reported ones);
its reservation becomes its real cost when it ends.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import db.queries as q
from db.models import utcnow
from db.session import Database
from pipeline.core.usage import Price, call_cost, format_money, price_key, stored_price
from pipeline.providers.http import Usage, collect_usage
from pipeline.stages.limits import ProviderFailing

BUDGET_SLACK = 1e-9  # dollars: float sums of prices that add up to the budget exactly are within it
PRICE_READ_SECONDS = 1.0  # a change of a price applies to a running task's calls within this


class BudgetReached(ProviderFailing):
    """The task's next call would take its spend over its budget: it stops calling providers."""


@dataclass
class _Tokens:
    """The tokens a provider reported for this task's calls: the base of a token price's estimate."""

    calls: int = 0
    input: int = 0
    output: int = 0

    def estimate(self, price: Price) -> float:
        if not self.calls:
            return 0.0
        return (price.per_1k_input * self.input + price.per_1k_output * self.output) / 1000 / self.calls


@dataclass
class MeteredCall:
    """One call as it is recorded: how long it took (None: it was never made), whether it succeeded, and the usage
    its reply reported."""

    seconds: float | None = None
    ok: bool = False
    reports: list[Usage] = field(default_factory=list)

    @contextlib.contextmanager
    def timed(self) -> Iterator[None]:
        """Around the call itself (its slot held), in the thread that makes it."""
        started = time.monotonic()
        with collect_usage() as reports:
            try:
                yield
                self.ok = True
            finally:
                self.seconds, self.reports = time.monotonic() - started, reports


class UsageMeter:
    """One claim of a task: records each provider call's usage and holds the task to its budget."""

    def __init__(self, db: Database, *, task_pk: int, task_id: str, user_id: int | None, worker_id: str,
                 budget: float | None, note: Callable[[str], None]):
        self.db = db
        self.task_pk, self.task_id, self.user_id, self.worker_id = task_pk, task_id, user_id, worker_id
        self.budget = budget
        self._note = note
        self._lock = threading.Lock()
        self._loaded = False
        self.spent = 0.0  # over every run of the task, the calls of this run that ended included
        self._reserved = 0.0  # the prices of this run's calls in flight
        self._tokens: dict[str, _Tokens] = {}
        self._prices: dict[str, tuple[float, Price | None]] = {}  # provider -> (when read, price)
        self.stopped: str | None = None  # the note, once the budget stopped the task

    @contextlib.contextmanager
    def call(self, provider: str | None, kind: str) -> Iterator[MeteredCall]:
        """Around one call to ``provider`` (None: offline, not recorded), before it waits for its provider's slot:
        reserves its price within the budget (``BudgetReached``) and records the call when it ends, once its slot
        is given back. The call itself runs inside ``MeteredCall.timed()``; a call that never got there (cancelled
        while waiting) is not recorded."""
        call = MeteredCall()
        if provider is None:
            yield call
            return
        price = self._price(provider)
        reserved = self._reserve(provider, kind, price)
        try:
            yield call
        finally:
            if call.seconds is None:
                with self._lock:
                    self._reserved = max(0.0, self._reserved - reserved)
            else:
                self._record(provider, kind, price, reserved, call)

    def _price(self, provider: str) -> Price | None:
        """The provider's price now: read again once this meter's copy is over ``PRICE_READ_SECONDS`` old, so that
        a change applies to the calls that follow it (and the calls in between spare a read)."""
        now = time.monotonic()
        with self._lock:
            read = self._prices.get(provider)
        if read is not None and now - read[0] < PRICE_READ_SECONDS:
            return read[1]
        with self.db.session() as session:
            text = q.get_setting(session, price_key(provider))
        price = stored_price(provider, text)  # edited by hand so that it does not parse: the calls go on, unpriced
        with self._lock:
            self._prices[provider] = (now, price)
        return price

    def _load(self) -> None:  # under self._lock
        if not self._loaded:
            with self.db.session() as session:
                spend = q.task_spend(session, self.task_pk)
            self.spent += spend.spent
            self._tokens = {p: _Tokens(*counts) for p, counts in spend.tokens.items()}
            self._loaded = True

    def _reserve(self, provider: str, kind: str, price: Price | None) -> float:
        """This call's price, reserved; ``BudgetReached`` when it does not fit in the budget."""
        with self._lock:
            self._load()
            if self.stopped is None:
                if price is None:
                    return 0.0
                estimate = price.fixed(1 if kind == "image" else 0)
                if price.per_token:
                    estimate += self._tokens.get(provider, _Tokens()).estimate(price)
                committed = self.spent + self._reserved
                if self.budget is None or committed + estimate <= self.budget + BUDGET_SLACK:
                    self._reserved += estimate
                    return estimate
                self.stopped = f"stopped at the budget: spent {format_money(committed)} of {format_money(self.budget)}"
                first = True
            else:
                first = False
        if first:
            self._note(self.stopped)
        raise BudgetReached(kind, self.stopped)

    def _record(self, provider: str, kind: str, price: Price | None, reserved: float, call: MeteredCall) -> None:
        ok, seconds = call.ok, call.seconds or 0.0
        tokens_in = _total(u.input_tokens for u in call.reports)
        tokens_out = _total(u.output_tokens for u in call.reports)
        images = 1 if ok and kind == "image" else 0  # an image call makes one image (a base, a face edit or a grid)
        cost, tokens_unpriced = call_cost(price, ok=ok, images=images, input_tokens=tokens_in,
                                          output_tokens=tokens_out)
        with self._lock:  # counted at once (the money is spent), even when the row below cannot be written
            self._reserved = max(0.0, self._reserved - reserved)
            self.spent += cost or 0.0
            if tokens_in is not None or tokens_out is not None:
                seen = self._tokens.setdefault(provider, _Tokens())
                seen.calls, seen.input, seen.output = seen.calls + 1, seen.input + (tokens_in or 0), \
                    seen.output + (tokens_out or 0)
        with self.db.transaction(immediate=False) as session:
            q.insert_usage(session, task_pk=self.task_pk, task_id=self.task_id, user_id=self.user_id,
                           worker_id=self.worker_id, provider=provider, kind=kind, ok=ok, images=images,
                           input_tokens=tokens_in, output_tokens=tokens_out, seconds=round(seconds, 3), cost=cost,
                           tokens_unpriced=tokens_unpriced, created_at=utcnow())


def _total(values: Iterator[int | None]) -> int | None:
    """The sum of the reported counts; None when none was reported."""
    known = [v for v in values if v is not None]
    return sum(known) if known else None
