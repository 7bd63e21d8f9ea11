"""Running one claimed task: the data stage, the image stage and the final status.

Every write goes through ``TaskContext.guarded()``, which re-checks in the same transaction that this worker
still holds the lease (row-locked on PostgreSQL): a worker that lost its lease stops touching the task.
Between units of work ``checkpoint()`` honours cancel, lease loss and worker shutdown.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Iterator, MutableMapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

import db.queries as q
from db.models import GenerationTask, PersonaStatus, TaskStatus, utcnow
from db.session import Database
from pipeline.config import Settings
from pipeline.domain import (
    BIO_PROMPT_KEYS,
    MAX_BATCHES_IN_FLIGHT,
    PERSONA_BATCH_SIZE,
    PersonaBatch,
    PersonaRequest,
    derive_seed,
)
from pipeline.errors import LeaseLost, PipelineError, ProviderError, TaskCancelled
from pipeline.identity_stage import IdentityLane, catch_up
from pipeline.identity_stage import enabled as identity_enabled
from pipeline.image_stage import make_persona_images
from pipeline.personas import name_key
from pipeline.registry import Providers
from pipeline.review import Review, ReviewPrefetch, compute_review
from pipeline.storage import Storage
from pipeline.targets import allocate_slots

logger = logging.getLogger(__name__)

MAX_EXCLUDED_NAMES = 200
ERROR_LOG_MAX_LINES = 50


class WorkerStopping(PipelineError):
    """The worker is shutting down: release the lease after the current unit."""


class TaskLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Prefixes every line with the task id."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        return f"[task {self.extra['task_id'] if self.extra else '?'}] {msg}", kwargs


class CallSlots:
    """``n`` slots for provider calls, handed out by priority: the waiter with the most calls left goes first
    (ties: first come). Personas are chains of calls (base, prompt, grid, ...); first come, first served let a
    task end on one persona's last calls with the other slots idle (one slot idle for ~200 ms at the end of a
    1.6 s task in a traced bench run). Serving the longest remaining chain first keeps every slot busy to the
    end."""

    def __init__(self, n: int):
        self._free = n
        self._cond = threading.Condition()
        self._waiting: list[tuple[int, int]] = []  # a heap of (-priority, arrival)
        self._arrivals = itertools.count()

    def acquire(self, priority: int = 0) -> None:
        with self._cond:
            entry = (-priority, next(self._arrivals))
            heapq.heappush(self._waiting, entry)
            try:
                while not self._free or self._waiting[0] != entry:
                    self._cond.wait()
            except BaseException:
                self._waiting.remove(entry)
                heapq.heapify(self._waiting)
                self._cond.notify_all()
                raise
            heapq.heappop(self._waiting)
            self._free -= 1
            if self._free and self._waiting:
                self._cond.notify_all()  # another slot is free: the next waiter may take it too

    def release(self) -> None:
        with self._cond:
            self._free += 1
            self._cond.notify_all()


@dataclass
class TaskContext:
    """Everything a running task needs; built by the worker for each claim."""

    db: Database
    storage: Storage
    settings: Settings
    providers: Providers
    worker_id: str
    task_pk: int
    task_id: str
    seed: int
    count: int
    images_per_persona: int
    description: str
    language: str
    snapshot: dict[str, Any]
    targets: dict[str, Any] | None = None
    status: str = ""  # the status when claimed: a stage writes its own only when it differs
    lost: threading.Event = field(default_factory=threading.Event)
    cancel: threading.Event = field(default_factory=threading.Event)
    stopping: threading.Event = field(default_factory=threading.Event)
    identity_lane: IdentityLane | None = None  # analyses finished personas in the background (identity check)
    review_prefetch: ReviewPrefetch | None = None  # the review's per-persona work, during the image stage
    log: TaskLog = field(init=False)
    _call_slots: CallSlots = field(init=False)
    _calls_left: threading.local = field(init=False, default_factory=threading.local)

    def __post_init__(self) -> None:
        self.log = TaskLog(logger, {"task_id": self.task_id})
        self._call_slots = CallSlots(max(1, self.settings.persona_threads))

    def expect_calls(self, n: int) -> None:
        """How many provider calls this thread's persona still has to make (its calls' priority)."""
        self._calls_left.n = n

    @contextlib.contextmanager
    def provider_call(self) -> Iterator[None]:
        """One of the task's ``PERSONA_THREADS`` provider calls in flight. The image stage runs more personas
        than that, so while one persona's grid is split, styled and stored, another's call is already out:
        the calls, not the CPU work between them, set the pace. A free slot goes to the waiting persona with
        the most calls left (``expect_calls``)."""
        left = getattr(self._calls_left, "n", 0)
        self._call_slots.acquire(left)
        try:
            self._calls_left.n = max(0, left - 1)
            self.checkpoint()
            yield
        finally:
            self._call_slots.release()

    @classmethod
    def from_task(cls, task: GenerationTask, **kwargs: Any) -> TaskContext:
        return cls(
            task_pk=task.id,
            task_id=task.task_id,
            seed=int(task.seed or 0),
            count=task.number_to_generate,
            images_per_persona=task.images_per_persona,
            description=task.persona_description,
            language=task.bio_language,
            snapshot=dict(task.config_snapshot or {}),
            targets=task.targets or None,
            status=task.status,
            **kwargs,
        )

    def toggle(self, name: str) -> bool:
        return bool(self.snapshot.get("toggles", {}).get(name, False))

    def sleep(self, seconds: float) -> None:
        """Wait, but wake at once (and stop) on cancel, a lost lease or a worker shutdown."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.checkpoint()
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
        self.checkpoint()

    def checkpoint(self) -> None:
        if self.lost.is_set():
            raise LeaseLost(f"task {self.task_id}: lease lost")
        if self.cancel.is_set():
            raise TaskCancelled(f"task {self.task_id} cancelled")
        if self.stopping.is_set():
            raise WorkerStopping(f"task {self.task_id}: worker stopping")

    @contextlib.contextmanager
    def guarded(self) -> Iterator[tuple[Session, GenerationTask]]:
        """A write transaction that proceeds only while this worker holds the lease."""
        with self.db.transaction(immediate=True) as session:
            task = q.assert_lease(session, self.task_pk, self.worker_id, utcnow())
            if task is None:
                self.lost.set()
                raise LeaseLost(f"task {self.task_id}: lease lost")
            yield session, task

    def note(self, problem: str) -> None:
        """Record a problem in the task's error log at once, so it is visible while the task runs."""
        self.log.warning("%s", problem)
        with contextlib.suppress(LeaseLost), self.guarded() as (_session, task):
            task.error_log = _append_lines(task.error_log, [problem])


def run_task(ctx: TaskContext) -> str:
    """Run (or resume) a claimed task to a final status; returns it ('released' when handed back)."""
    try:
        run_data_stage(ctx)
        run_image_stage(ctx)
        return finalize(ctx, run_review(ctx))
    except TaskCancelled:
        with ctx.guarded() as (session, task):
            q.finish_task(session, task, status=TaskStatus.CANCELLED.value, error_log=_append_lines(task.error_log, ["cancelled by a user"]))
        ctx.log.info("cancelled")
        return TaskStatus.CANCELLED.value
    except LeaseLost:
        ctx.log.warning("lease lost: another worker may have taken the task over; stopping")
        return "lease-lost"
    except DBAPIError as exc:
        # The database went away mid-unit (e.g. a PostgreSQL restart). Nothing can be recorded now; the lease
        # expires and this or another worker resumes the task from what was committed.
        ctx.log.warning("database unavailable (%s); the task resumes when its lease expires", type(exc).__name__)
        return "database-unavailable"
    except WorkerStopping:
        with contextlib.suppress(LeaseLost), ctx.guarded() as (session, task):
            q.hand_back_task(session, task)  # at once: another worker resumes it
        ctx.log.info("released on shutdown")
        return "released"
    except PipelineError as exc:
        ctx.log.error("failed: %s", exc)
        with contextlib.suppress(LeaseLost), ctx.guarded() as (session, task):
            q.finish_task(session, task, status=TaskStatus.FAILED.value, error_log=_append_lines(task.error_log, [str(exc)]))
        return TaskStatus.FAILED.value
    except Exception as exc:  # a bug must not leave the task looking alive: record it and fail visibly
        ctx.log.exception("internal error")
        with contextlib.suppress(LeaseLost), ctx.guarded() as (session, task):
            message = f"internal error: {type(exc).__name__}: {str(exc)[:300]}"
            q.finish_task(session, task, status=TaskStatus.FAILED.value, error_log=_append_lines(task.error_log, [message]))
        return TaskStatus.FAILED.value
    finally:
        if ctx.review_prefetch is not None:
            ctx.review_prefetch.close()
        if ctx.identity_lane is not None:
            ctx.identity_lane.close()


def fail_unstartable(db: Database, task_pk: int, worker_id: str, reason: str) -> None:
    """Fail a claimed task that cannot start in this process (its providers do not load), with the reason: released,
    it would only be claimed again, the oldest waiting task, and hold up the queue."""
    try:
        with db.transaction(immediate=True) as session:
            task = q.assert_lease(session, task_pk, worker_id, utcnow())
            if task is not None:
                q.finish_task(session, task, status=TaskStatus.FAILED.value,
                              error_log=_append_lines(task.error_log, [reason]))
    except Exception:  # the lease expires and the next claim tries (and reports) again
        logger.exception("cannot record that task %s cannot start", task_pk)


def release_task(db: Database, task_pk: int, worker_id: str) -> None:
    """Hand a task's lease back at once (its process died): the next claim resumes it from what was committed."""
    try:
        with db.transaction(immediate=True) as session:
            task = q.assert_lease(session, task_pk, worker_id, utcnow())
            if task is not None:
                q.hand_back_task(session, task)
    except Exception:  # the lease then expires on its own
        logger.exception("cannot hand task %s back", task_pk)


# ---------------------------------------------------------------------------------------------- data stage


def run_data_stage(ctx: TaskContext) -> None:
    """Request personas in batches of 10, up to 5 in flight, committed in batch order, topped up when short."""
    with ctx.db.session() as session:
        stored = q.count_personas(session, ctx.task_pk)
        next_batch = q.max_batch_number(session, ctx.task_pk) + 1
        names = {name_key(f, last) for f, last in q.existing_names(session, ctx.task_pk)}
        recent = [f"{f} {last}" for f, last in q.existing_names(session, ctx.task_pk)][-MAX_EXCLUDED_NAMES:]
    remaining = ctx.count - stored
    if remaining <= 0:
        return
    if ctx.status != TaskStatus.GENERATING_DATA.value:  # the claim of a waiting task has set it already
        with ctx.guarded() as (session, task):
            q.set_task_status(session, task, TaskStatus.GENERATING_DATA.value)
    max_requests = math.ceil(remaining / PERSONA_BATCH_SIZE) * 2 + 3
    requests_made = 0
    prompts = {key: ctx.snapshot.get("bio_prompts", {}).get(key, "") for key in BIO_PROMPT_KEYS}
    open_slots = _open_slots(ctx) if ctx.targets else []
    window: deque[tuple[int, int, Future[PersonaBatch]]] = deque()
    ctx.log.info("data stage: %d personas to generate", remaining)
    with ThreadPoolExecutor(MAX_BATCHES_IN_FLIGHT, thread_name_prefix=f"data-{ctx.task_id}") as pool:
        try:
            while remaining > 0:
                in_flight = sum(n for _, n, _ in window)
                while len(window) < MAX_BATCHES_IN_FLIGHT and in_flight < remaining and requests_made < max_requests:
                    ctx.checkpoint()
                    n = min(PERSONA_BATCH_SIZE, remaining - in_flight)
                    # Slots of the personas still missing; those in flight are asked for again only on top-up.
                    slots = tuple(open_slots[in_flight:in_flight + n]) if open_slots else ()
                    request = PersonaRequest(
                        description=ctx.description,
                        language=ctx.language,
                        count=n,
                        bio_prompts=prompts,
                        seed=derive_seed(ctx.seed, "batch", next_batch),
                        batch_number=next_batch,
                        exclude_names=tuple(recent),
                        slots=slots,
                    )
                    window.append((next_batch, n, pool.submit(ctx.providers.persona.generate, request)))
                    next_batch += 1
                    requests_made += 1
                    in_flight += n
                if not window:
                    break
                batch_number, _n, future = window.popleft()
                try:
                    batch = future.result()
                except ProviderError as exc:
                    ctx.note(f"persona batch {batch_number} failed: {exc}")
                    continue
                ctx.checkpoint()
                fresh = []
                for persona in batch.personas:
                    key = name_key(persona.firstname, persona.lastname)
                    if key in names:
                        continue
                    names.add(key)
                    fresh.append(persona.as_dict())
                fresh = fresh[:remaining]
                if batch.rejected or batch.problems:
                    ctx.note(
                        f"persona batch {batch_number}: {batch.rejected} unusable object(s)"
                        + (f" ({'; '.join(batch.problems[:3])})" if batch.problems else "")
                    )
                with ctx.guarded() as (session, _task):
                    if q.batch_exists(session, ctx.task_pk, batch_number):
                        continue  # committed by an earlier attempt: never insert a batch twice
                    inserted = q.insert_personas(session, ctx.task_pk, batch_number, fresh)
                remaining -= inserted
                for stored_persona in fresh[:inserted]:
                    _fill_slot(open_slots, stored_persona)
                recent = (recent + [f"{p['firstname']} {p['lastname']}" for p in fresh])[-MAX_EXCLUDED_NAMES:]
        finally:
            for _, _, future in window:
                future.cancel()
    if remaining > 0:
        ctx.note(f"data stage: {remaining} of {ctx.count} personas missing after {requests_made} batch requests")


def _slot_matches(slot: dict[str, Any], persona: dict[str, Any]) -> bool:
    if "gender" in slot and slot["gender"] != persona.get("gender"):
        return False
    if "ethnicity" in slot and str(slot["ethnicity"]).casefold() != str(persona.get("ethnicity") or "").casefold():
        return False
    age = persona.get("age")
    return "age_min" not in slot or (isinstance(age, int) and slot["age_min"] <= age <= slot["age_max"])


def _fill_slot(open_slots: list[dict[str, Any]], persona: dict[str, Any]) -> None:
    """Mark the slot a stored persona fills (an exact match if any, else the oldest open one)."""
    if not open_slots:
        return
    for i, slot in enumerate(open_slots):
        if _slot_matches(slot, persona):
            del open_slots[i]
            return
    del open_slots[0]


def _open_slots(ctx: TaskContext) -> list[dict[str, Any]]:
    """The task's exact demographic slots minus those already filled by stored personas (resume-safe)."""
    slots = allocate_slots(ctx.targets, ctx.count, derive_seed(ctx.seed, "slots"))
    with ctx.db.session() as session:
        for row in q.list_results(session, ctx.task_pk):
            _fill_slot(slots, {"gender": row.gender, "ethnicity": row.ethnicity, "age": row.age})
    return slots


# --------------------------------------------------------------------------------------------- image stage


def run_image_stage(ctx: TaskContext) -> None:
    """Make each pending persona's base and variations, several personas in parallel."""
    with ctx.guarded() as (session, task):  # the data stage's end and this stage's start: one transaction
        pending = q.pending_persona_ids(session, ctx.task_pk)
        status = TaskStatus.GENERATING_IMAGES if pending else TaskStatus.DATA_GENERATED
        q.set_task_status(session, task, status.value)
    if not pending:
        return
    ctx.log.info("image stage: %d personas", len(pending))
    if identity_enabled(ctx) and ctx.identity_lane is None:
        ctx.identity_lane = IdentityLane(ctx)
    if ctx.review_prefetch is None:
        ctx.review_prefetch = ReviewPrefetch(ctx)
        ctx.review_prefetch.start()
    # Twice the calls in flight: a persona between two calls (storing its base, processing its grid) does not
    # hold one of the task's call slots (``TaskContext.provider_call``).
    threads = max(1, min(2 * ctx.settings.persona_threads, len(pending)))
    with ThreadPoolExecutor(threads, thread_name_prefix=f"img-{ctx.task_id}") as pool:
        futures = [pool.submit(_persona_unit, ctx, result_id) for result_id in pending]
        try:
            for future in futures:
                future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise


PERSONA_ATTEMPTS = 3  # a persona whose provider calls ran out of retries is resumed up to this many times
PERSONA_RETRY_PAUSE_SECONDS = 2.0


def _persona_unit(ctx: TaskContext, result_id: int) -> None:
    ctx.checkpoint()
    try:
        for attempt in range(1, PERSONA_ATTEMPTS + 1):
            try:
                make_persona_images(ctx, result_id)  # resumes: the stored base and finished blocks are kept
                if ctx.identity_lane is not None:
                    ctx.identity_lane.submit(result_id)  # analysed in the background; generation goes on
                if ctx.review_prefetch is not None:
                    ctx.review_prefetch.persona_done(result_id)
                return
            except ProviderError as exc:
                if not exc.retryable or attempt == PERSONA_ATTEMPTS:
                    raise
                ctx.log.warning("persona %d: %s; resuming it (attempt %d of %d)", result_id, exc, attempt + 1,
                                PERSONA_ATTEMPTS)
                ctx.sleep(PERSONA_RETRY_PAUSE_SECONDS * attempt)
    except (LeaseLost, TaskCancelled, WorkerStopping, DBAPIError):
        raise  # not the persona's fault: the whole task stops (and resumes later where needed)
    except PipelineError as exc:
        _fail_persona(ctx, result_id, str(exc))
    except Exception as exc:  # one persona's bug must not sink the others: record it on the persona
        ctx.log.exception("persona %d: internal error", result_id)
        _fail_persona(ctx, result_id, f"internal error: {type(exc).__name__}: {str(exc)[:200]}")


def _fail_persona(ctx: TaskContext, result_id: int, reason: str) -> None:
    ctx.log.warning("persona %d failed: %s", result_id, reason)
    with ctx.guarded() as (session, _task):
        row = q.get_result(session, result_id)
        if row is not None:
            q.mark_persona(session, row, PersonaStatus.FAILED.value, reason[:2000])


# ------------------------------------------------------------------------------------------------ finalize


def run_review(ctx: TaskContext) -> Review | None:
    """The identity check's catch-up, quality checks and the targets report (``finalize`` stores them); a failure
    here is reported, never fatal to the dataset."""
    ctx.checkpoint()
    if identity_enabled(ctx):
        try:
            catch_up(ctx, ctx.identity_lane)
        except (LeaseLost, TaskCancelled, WorkerStopping, DBAPIError):
            raise
        except Exception as exc:
            ctx.log.exception("identity check failed")
            ctx.note(f"identity check could not finish: {type(exc).__name__}: {str(exc)[:200]}")
    try:
        return compute_review(ctx)
    except (LeaseLost, TaskCancelled, WorkerStopping, DBAPIError):
        raise
    except Exception as exc:  # the dataset is complete: say the checks failed instead of failing the task
        ctx.log.exception("quality checks failed")
        ctx.note(f"quality checks could not run: {type(exc).__name__}: {str(exc)[:200]}")
        return None


def finalize(ctx: TaskContext, review: Review | None = None) -> str:
    """The final status, in one transaction with the review's results."""
    with ctx.guarded() as (session, task):
        if review is not None:
            review.store(session, task)
        progress = q.task_progress(session, [ctx.task_pk]).get(ctx.task_pk, q.Progress())
        failures = [
            f"persona {r.firstname} {r.lastname[:1]}. (batch {r.batch_number}, slot {r.slot}): {r.error}"
            for r in q.failed_personas(session, ctx.task_pk)
        ]
        if progress.personas_done >= ctx.count:
            status = TaskStatus.COMPLETED.value
        elif progress.personas_done == 0:
            status = TaskStatus.FAILED.value
        else:
            status = TaskStatus.PARTIAL.value
        q.finish_task(session, task, status=status, error_log=_append_lines(task.error_log, failures))
    ctx.log.info(
        "finished %s: %d/%d personas, %d images, %d failed",
        status, progress.personas_done, ctx.count, progress.images_done, progress.personas_failed,
    )
    return status


def _append_lines(log: str | None, lines: list[str]) -> str | None:
    """Append lines to an error log, keeping it bounded."""
    all_lines = (log.splitlines() if log else []) + lines
    if len(all_lines) > ERROR_LOG_MAX_LINES:
        all_lines = [*all_lines[:ERROR_LOG_MAX_LINES], f"... and {len(all_lines) - ERROR_LOG_MAX_LINES} more"]
    return "\n".join(all_lines) or None
