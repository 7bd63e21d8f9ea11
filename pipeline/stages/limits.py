"""The provider limiter: how many calls to each provider are in flight, over every worker, process and host.

A provider is one kind (persona LLM, grid-prompt LLM, image API) with the provider and model a task's snapshot
names (``provider_key``, in ``pipeline.core.usage``); its limits are the administrator's (``db.queries.limits``),
read live: at an admission, when this process's copy is over ``LIMITS_READ_SECONDS`` old.
A call takes a slot in ``provider_slots`` (one short transaction) and gives it back when it ends; its holder renews it
while the call runs, so the slots of a process that died expire on their own.

In a process, the calls waiting for one provider queue here, served by task in turns: the earliest-submitted task
waiting gets ``OLDEST_TURNS`` calls for each call of every other task (first come, mostly first served; no task
starves another). Only the head of the queue asks the database: at once when a call of this process ends, else
with a growing pause, so that 64 waiting threads do not hammer the database.

The limit adapts (``record_pushback``): each HTTP attempt is reported by the HTTP client (``http.observe``); a
429, 503 or ``Retry-After`` lowers the provider's effective limit to ``DECREASE_FACTOR`` of itself, a reply far
slower than its recent median does the same, and refusals in a row open a circuit breaker. A refused call gives
its slot back and waits for a new one before its retry, so the retries of a burst that was refused do not all go
out again at once.

The offline providers call no network: their calls are only bounded by this host's cores.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import statistics
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http import HTTPStatus

from sqlalchemy.orm import Session

import db.queries as q
from db.models import utcnow
from db.session import Database
from pipeline.core.errors import ProviderError
from pipeline.core.usage import provider_key as provider_key  # re-exported: callers name it from here too
from pipeline.providers.http import Attempt, observe

log = logging.getLogger(__name__)

SLOT_TTL_SECONDS = 30.0  # a slot not renewed for this long (its process died or hung) no longer counts
POLL_MIN_SECONDS = 0.02  # the head of a queue asks the database again after this long at first...
POLL_MAX_SECONDS = 0.25  # ...then twice as long each time, up to this
WAIT_SLICE_SECONDS = 0.2  # the head of a queue looks at its task (cancel, lease lost) at least this often...
QUEUE_LOOK_SECONDS = 1.0  # ...the calls behind it this often (hundreds may wait: each look costs CPU)
LIMITS_READ_SECONDS = 1.0  # a change of a provider's limits applies to this process's next admissions within this
LATENCY_SAMPLES = 50  # a reply is slow when far above the median of this many recent ones of the same endpoint
LATENCY_MIN_SAMPLES = 10
SLOW_FACTOR = 3.0
SLOW_MIN_EXTRA_SECONDS = 1.0  # ...and at least this much above it (a loaded machine's jitter is not a slow provider)
DECREASE_COOLDOWN_SECONDS = 2.0  # at least; else one median latency (the calls out when it halved come back refused)
THROTTLE_STATUSES = frozenset({429, 503})
FAILURE_WINDOW = 8  # a task stops early when most of the last calls of one kind failed for good
FAILURE_MIN_CALLS = 6


class ProviderFailing(ProviderError):
    """The task stopped calling a provider that refused most of its calls (a revoked key, an exhausted quota)."""

    def __init__(self, kind: str, message: str):
        super().__init__(kind, message, retryable=False)
        self.args = (message,)

    def __str__(self) -> str:
        return str(self.args[0])


OLDEST_TURNS = 3  # calls in a row for the earliest-submitted waiting task, against one for each other task: it
# ends sooner, which frees its place under the running-task cap sooner, and a later task still gets a call in four


class _Gate:
    """One provider's waiting calls in this process, served by task in turns, the earliest-submitted task (the
    smallest ``task``, a task's primary key) ``OLDEST_TURNS`` calls at a time. Guarded by ``lock``.

    Each waiting call waits on a condition of its own (``waiter``), and only the head of the queue is woken when
    its turn comes or a call ends: with a hundred calls waiting, waking them all at every call's end cost more CPU
    than the calls themselves. The others look at their task (``checkpoint``) every ``QUEUE_LOOK_SECONDS``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.queues: dict[int, deque[threading.Condition]] = {}
        self.order: deque[int] = deque()  # tasks with waiting calls; the first one is served next
        self.streak: tuple[int | None, int] = (None, 0)  # the task at the front and the calls it had in a row
        self.ends = 0  # calls of this process that ended: the head asks again at once
        self.in_use = 0  # calls in flight (used by the offline gate, bounded by the cores)

    def waiter(self) -> threading.Condition:
        """A waiting call's place in the queue (``join``), woken when it becomes the head."""
        return threading.Condition(self.lock)

    def join(self, task: int, waiter: threading.Condition) -> None:
        if task not in self.queues:
            self.queues[task] = deque()
            self.order.append(task)
        self.queues[task].append(waiter)

    def head(self) -> threading.Condition | None:
        return self.queues[self.order[0]][0] if self.order else None

    def leave(self, task: int, waiter: threading.Condition, *, served: bool) -> None:
        waiting = self.queues[task]
        waiting.remove(waiter)
        if served:  # the task had a call: the earliest-submitted one keeps its turn, else it goes to the back
            in_row = self.streak[1] + 1 if self.streak[0] == task else 1
            if waiting and task == min(self.queues) and in_row < OLDEST_TURNS:
                self.streak = (task, in_row)
            else:
                self.streak = (None, 0)
                self.order.remove(task)
                if waiting:
                    self.order.append(task)
        elif not waiting:
            self.order.remove(task)
        if not waiting:
            del self.queues[task]
        self._wake_head()

    def ended(self) -> None:
        with self.lock:
            self.in_use = max(0, self.in_use - 1)
            self.ends += 1
            self._wake_head()

    def _wake_head(self) -> None:  # under self.lock
        head = self.head()
        if head is not None:
            head.notify()

    def admit(self, task: int, try_once: Callable[[], float | None], checkpoint: Callable[[], None]) -> None:
        """Wait for this call's turn, then ask ``try_once`` (None: admitted; else seconds to wait at least, 0 for
        "until a call ends") until it admits the call. ``checkpoint`` raises to give up (cancel, lease lost)."""
        me = self.waiter()
        with self.lock:
            self.join(task, me)
        served = False
        try:
            pause = POLL_MIN_SECONDS
            next_try = 0.0
            seen = -1
            while True:
                checkpoint()
                with self.lock:
                    if self.head() is not me:
                        me.wait(QUEUE_LOOK_SECONDS)
                        continue
                    if seen >= 0 and self.ends != seen:  # a call ended here: a slot may be free at once
                        next_try, pause = 0.0, POLL_MIN_SECONDS
                    now = time.monotonic()
                    if now < next_try:
                        me.wait(min(next_try - now, WAIT_SLICE_SECONDS))
                        continue
                    seen = self.ends
                wait = try_once()
                if wait is None:
                    served = True
                    return
                if wait > 0:
                    next_try = time.monotonic() + wait
                else:
                    next_try = time.monotonic() + pause * random.uniform(0.8, 1.2)
                    pause = min(POLL_MAX_SECONDS, pause * 2)
        finally:
            with self.lock:
                if served:
                    self.in_use += 1
                self.leave(task, me, served=served)


@dataclass
class _Call:
    """One call to a provider, from its admission to its end."""

    provider: str
    kind: str
    task: int
    task_id: str
    worker_id: str
    checkpoint: Callable[[], None]
    holder: str | None = None
    limits: q.ProviderLimits = field(default_factory=lambda: q.ProviderLimits(1, None))
    recovering: bool = False
    successes: int = 0


class ProviderLimiter:
    """The limiter of one process for one database (``limiter_for``): its local queues, its slots held, and the
    recent latencies of each provider's endpoints."""

    def __init__(self, db: Database, *, ttl_seconds: float = SLOT_TTL_SECONDS, cpu_slots: int | None = None):
        self.db = db
        self.ttl_seconds = ttl_seconds
        self.cpu_slots = max(1, cpu_slots or os.cpu_count() or 1)
        self._lock = threading.Lock()
        self._gates: dict[str | None, _Gate] = {}
        self._held: dict[str, str] = {}  # holder -> provider
        self._renewer: threading.Thread | None = None
        self._latencies: dict[tuple[str, str], deque[float]] = {}
        self._limits: dict[str, tuple[float, q.ProviderLimits]] = {}  # kind -> (when read, limits)

    def _gate(self, provider: str | None) -> _Gate:
        with self._lock:
            return self._gates.setdefault(provider, _Gate())

    @contextlib.contextmanager
    def call(self, provider: str | None, kind: str, *, task: int, task_id: str, worker_id: str,
             checkpoint: Callable[[], None]) -> Iterator[None]:
        """Hold a slot of ``provider`` (None: an offline provider, bounded by the cores) around one call, observing
        its HTTP attempts. ``checkpoint`` is called while waiting and may raise to give up."""
        gate = self._gate(provider)
        if provider is None:
            gate.admit(task, lambda: None if gate.in_use < self.cpu_slots else 0.0, checkpoint)
            try:
                yield
            finally:
                gate.ended()
            return
        call = _Call(provider, kind, task, task_id, worker_id, checkpoint)
        self._acquire(call, gate)
        try:
            with observe(lambda attempt: self._on_attempt(call, attempt)):
                yield
        finally:
            self._release(call, gate)

    # -- slots -------------------------------------------------------------------------------------------------
    def _acquire(self, call: _Call, gate: _Gate) -> None:
        def try_once() -> float | None:
            holder = uuid.uuid4().hex
            with self.db.transaction() as session:
                limits = self._read_limits(session, call.kind)
                admission = q.try_acquire(session, provider=call.provider, holder=holder, worker_id=call.worker_id,
                                          task_id=call.task_id, limits=limits, now=utcnow(),
                                          ttl_seconds=self.ttl_seconds)
            if admission.wait is None:
                call.holder, call.limits, call.recovering = holder, limits, admission.recovering
                with self._lock:
                    self._held[holder] = call.provider
                    self._start_renewer()
            return admission.wait

        gate.admit(call.task, try_once, call.checkpoint)

    def _read_limits(self, session: Session, kind: str) -> q.ProviderLimits:
        """The administrator's limits of ``kind``: this process's copy, read again once over ``LIMITS_READ_SECONDS``
        old (one statement less in the admission that every call of every worker makes)."""
        now = time.monotonic()
        with self._lock:
            read = self._limits.get(kind)
        if read is not None and now - read[0] < LIMITS_READ_SECONDS:
            return read[1]
        limits = q.read_provider_limits(session, kind)
        with self._lock:
            self._limits[kind] = (now, limits)
        return limits

    def _release(self, call: _Call, gate: _Gate) -> None:
        holder, call.holder = call.holder, None
        if holder is None:
            return
        with self._lock:
            self._held.pop(holder, None)
        try:
            with self.db.transaction() as session:
                now = utcnow()
                q.release_slot(session, holder, now, keep_for_rate=call.limits.rate_per_minute is not None)
                if call.successes and call.recovering:
                    q.record_successes(session, call.provider, call.successes, call.limits.concurrency, now)
        except Exception:  # the database is away: the slot expires on its own (SLOT_TTL_SECONDS)
            log.warning("%s: cannot release a call's slot; it expires in %g s", call.provider, self.ttl_seconds,
                        exc_info=True)
        finally:
            call.successes = 0
            gate.ended()

    def _start_renewer(self) -> None:  # under self._lock
        if self._renewer is None or not self._renewer.is_alive():
            self._renewer = threading.Thread(target=self._renew_loop, name="provider-slots", daemon=True)
            self._renewer.start()

    def _renew_loop(self) -> None:
        """Keep this process's slots counted while their calls run; ends when it holds none."""
        while True:
            time.sleep(self.ttl_seconds / 3)
            with self._lock:
                holders = list(self._held)
                if not holders:
                    self._renewer = None
                    return
            try:
                with self.db.transaction() as session:
                    now = utcnow()
                    q.renew_slots(session, holders, now, now + timedelta(seconds=self.ttl_seconds))
            except Exception:  # e.g. a database restart: try again at the next round
                log.warning("cannot renew the provider slots of this process", exc_info=True)

    # -- what the provider said ------------------------------------------------------------------------------------
    def _on_attempt(self, call: _Call, attempt: Attempt) -> None:
        status = attempt.status
        if status is not None and status < 400:
            if self._slow(call.provider, attempt):
                log.warning("%s: a reply took %.1f s, far above its recent median: backing off", call.provider,
                            attempt.seconds)
                self._pushback(call, attempt, throttled=False, slow=True)
            else:
                call.successes += 1
            return
        throttled = status in THROTTLE_STATUSES or (status is not None and attempt.retry_after is not None)
        if not (throttled or status is None or status >= 500):
            return  # another 4xx: this request's fault, not the provider's load
        self._pushback(call, attempt, throttled=throttled, slow=False)
        # Give the slot back and wait for one under the lowered limit (or the breaker's pause) before the retry.
        gate = self._gate(call.provider)
        self._release(call, gate)
        self._acquire(call, gate)

    def _pushback(self, call: _Call, attempt: Attempt, *, throttled: bool, slow: bool) -> None:
        call.recovering = True
        with self._lock:
            samples = list(self._latencies.get((call.provider, attempt.endpoint), ()))
        median = statistics.median(samples) if samples else 0.0
        try:
            with self.db.transaction() as session:
                q.record_pushback(session, call.provider, configured=call.limits.concurrency, now=utcnow(),
                                  throttled=throttled, slow=slow, retry_after=attempt.retry_after,
                                  cooldown_seconds=max(DECREASE_COOLDOWN_SECONDS, median))
        except Exception:  # the call itself goes on (its retry); the next pushback is recorded again
            log.warning("%s: cannot record the provider's pushback", call.provider, exc_info=True)

    def _slow(self, provider: str, attempt: Attempt) -> bool:
        """Whether a reply took far longer than the recent median of its endpoint (and remember its latency)."""
        with self._lock:
            samples = self._latencies.setdefault((provider, attempt.endpoint), deque(maxlen=LATENCY_SAMPLES))
            median = statistics.median(samples) if len(samples) >= LATENCY_MIN_SAMPLES else None
            samples.append(attempt.seconds)
        return median is not None and attempt.seconds > SLOW_FACTOR * median and \
            attempt.seconds - median >= SLOW_MIN_EXTRA_SECONDS


_limiters: weakref.WeakKeyDictionary[Database, ProviderLimiter] = weakref.WeakKeyDictionary()
_limiters_lock = threading.Lock()


def limiter_for(db: Database) -> ProviderLimiter:
    """The process's limiter for ``db``: every task of the process shares its queues."""
    with _limiters_lock:
        limiter = _limiters.get(db)
        if limiter is None:
            limiter = _limiters[db] = ProviderLimiter(db)
        return limiter


class CallRecord:
    """A task's last calls of each kind of provider: whether each failed for good (not a refusal of the content),
    so that a provider refusing most calls (a revoked key, an exhausted quota) stops the task's work early."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[str, deque[ProviderError | None]] = {}
        self.stopped: str | None = None  # the note, once the task stopped calling a provider

    def add(self, kind: str, failure: ProviderError | None) -> str | None:
        """Record one call; returns the note to make when this call makes the task stop (once)."""
        with self._lock:
            calls = self._calls.setdefault(kind, deque(maxlen=FAILURE_WINDOW))
            calls.append(failure)
            failed = [c for c in calls if c is not None]
            if self.stopped is not None or len(calls) < FAILURE_MIN_CALLS or 2 * len(failed) <= len(calls):
                return None
            last = failed[-1]
            self.stopped = (f"stopped early: the {kind} provider refused {len(failed)} of the last {len(calls)} "
                            f"calls: {_describe(last)}")
            return self.stopped


def _describe(error: ProviderError) -> str:
    if error.status is None:
        return str(error)
    try:
        phrase = HTTPStatus(error.status).phrase.lower()
    except ValueError:
        phrase = "error"
    return f"{error.status} {phrase} ({error})"
