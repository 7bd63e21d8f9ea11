"""The executor: a small DB-backed worker, the same in the Streamlit process and in ``python -m pipeline work``.

A worker claims tasks atomically (``db.queries.claim_next_task``: the global ``max_concurrent_tasks`` cap holds
across every process and host), runs each claimed task in a thread of its own, and renews its leases from a
heartbeat thread, which also relays cancel requests. A task whose worker died has its lease expire and is
resumed by the next claim.

Each worker keeps a row in the registry (``workers``) fresh at every heartbeat, so that a burst of waiting tasks
is shared among the live workers in proportion to their free places (``q.fair_share``) instead of all taken by
the first to look. A worker with a free place reads whether a task can start every ``LOOK_SECONDS`` (a read: no
write lock is taken on SQLite) and claims it then, so a task submitted by another process or host starts within a
fraction of a second; it claims at once when woken: by ``wake()`` (e.g. after a submit in the same process) or by
one of its own tasks finishing; and at least every ``POLL_SECONDS`` it also runs its housekeeping.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

import db.queries as q
from db.models import GenerationTask, utcnow
from db.session import Database
from pipeline.core.config import Settings
from pipeline.providers.registry import ProviderCache
from pipeline.stages.context import TaskContext
from pipeline.stages.review.quality import warm_up as warm_up_review
from pipeline.stages.run import fail_unstartable, run_task
from pipeline.storage import Storage
from pipeline.worker.cleanups import StorageCleaner

log = logging.getLogger(__name__)

# An idle worker's pause between two claims and its housekeeping (reaping, storage cleanups).
POLL_SECONDS = 1.0
# Between them it reads whether a task can start this often: a task submitted from another process waited up to a
# whole poll for its claim (half a second on average, a tenth of a short task), though nothing else held it back.
LOOK_SECONDS = 0.2
WORKER_LIVE_BEATS = 3  # a registered worker not seen for this many heartbeats no longer counts (killed, hung)


def default_worker_id() -> str:
    return f"{socket.gethostname()[:30]}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass
class _Held:
    ctx: TaskContext
    thread: threading.Thread


class Worker:
    """Claims and runs tasks until stopped. Thread-safe ``stop()`` and ``wake()``; ``run()`` blocks."""

    def __init__(
        self,
        db: Database,
        storage: Storage,
        settings: Settings,
        *,
        worker_id: str | None = None,
        providers: ProviderCache | None = None,
        poll_seconds: float = POLL_SECONDS,
    ):
        self.db = db
        self.storage = storage
        self.settings = settings
        self.worker_id = worker_id or default_worker_id()
        self.providers = providers or ProviderCache(settings)
        self.poll_seconds = poll_seconds
        self._held: dict[int, _Held] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self.finished: list[tuple[str, str]] = []  # (task_id, outcome), for callers and tests
        self._cleaner = StorageCleaner(db, storage)  # storage removals deletes left over

    # ------------------------------------------------------------------ control
    def stop(self) -> None:
        """Graceful: running tasks finish their current unit, then release their leases."""
        self._stop.set()
        self._wake.set()
        with self._lock:
            for held in self._held.values():
                held.ctx.stopping.set()

    def wake(self) -> None:
        """Look for work now instead of at the next poll (e.g. right after a submit)."""
        self._wake.set()

    @property
    def held_task_ids(self) -> list[str]:
        with self._lock:
            return [h.ctx.task_id for h in self._held.values()]

    # ------------------------------------------------------------------ main loop
    def run(self, *, until_idle: bool = False) -> None:
        """Claim and run tasks until ``stop()``; with ``until_idle``, also return once nothing is left to claim
        and this worker holds no task."""
        warm_up_review()
        log.info("worker %s started (slots=%d)", self.worker_id, self.settings.worker_task_slots)
        self._register()
        heartbeat = threading.Thread(target=self._heartbeat_loop, name=f"heartbeat-{self.worker_id}", daemon=True)
        heartbeat.start()
        try:
            while not self._stop.is_set():
                self._reap()
                self._cleaner.maybe_run()
                if self._free_slots() > 0 and self._claim_and_start():
                    continue  # there may be more waiting: claim again at once
                if until_idle and not self._held and not self._runnable_exists():
                    break
                # A wake-up between this wait and the clear is not lost: the loop claims right after the clear.
                self._wait_for_work()
                self._wake.clear()
        finally:
            self.stop()
            self._join_all()
            self._forget()
            log.info("worker %s stopped", self.worker_id)

    def _wait_for_work(self) -> None:
        """Until woken, or ``poll_seconds`` have passed, or (read every ``LOOK_SECONDS``) a task can start here."""
        deadline = time.monotonic() + self.poll_seconds
        while not self._wake.wait(max(0.0, min(LOOK_SECONDS, deadline - time.monotonic()))):
            if time.monotonic() >= deadline or (self._free_slots() > 0 and self._task_can_start()):
                return

    def _task_can_start(self) -> bool:
        """Whether a task waits for a worker while the cap has room (read only: the claim checks again)."""
        try:
            with self.db.session() as session:
                now = utcnow()
                return q.count_waiting_tasks(session, now) > 0 and \
                    q.count_held_tasks(session, now) < q.read_max_concurrent_tasks(session)
        except Exception:  # the claim at the next poll reports a database outage
            return False

    def _free_slots(self) -> int:
        with self._lock:
            return self.settings.worker_task_slots - len(self._held)

    def _claim_and_start(self) -> bool:
        """Claim this worker's share of the waiting tasks (``q.fair_share``: all of them, up to its free places and
        the cap, when it is the only live worker) in one transaction, then start them: the tasks of a burst of
        submits start together. Returns whether anything was claimed."""
        tasks = []
        try:
            with self.db.transaction(immediate=True) as session:
                now = utcnow()
                live = now - timedelta(seconds=WORKER_LIVE_BEATS * self.settings.heartbeat_seconds)
                share = q.fair_share(session, worker_id=self.worker_id, free=self._free_slots(), now=now,
                                     seen_after=live)
                for _ in range(share):
                    task = q.claim_next_task(
                        session,
                        worker_id=self.worker_id,
                        now=utcnow(),
                        lease_seconds=self.settings.lease_seconds,
                        max_attempts=self.settings.task_max_attempts,
                    )
                    if task is None:
                        break
                    tasks.append(task)
        except Exception:  # a DB outage must not kill the worker: log it and try again at the next poll
            log.exception("worker %s: claim failed", self.worker_id)
            return False
        for task in tasks:
            self._start(task)
        return bool(tasks)

    def _start(self, task: GenerationTask) -> None:
        # After the claim's commit: loading a provider the first time imports its client libraries, which must not
        # happen while holding the database's write lock.
        try:
            providers = self.providers.for_snapshot(task.config_snapshot)
        except Exception as exc:  # e.g. a provider this version does not have: the task can never run here
            log.error("task %s cannot start: %s", task.task_id, exc)
            fail_unstartable(self.db, task.id, self.worker_id, f"cannot start: {exc}")
            return
        ctx = TaskContext.from_task(
            task, db=self.db, storage=self.storage, settings=self.settings, providers=providers,
            worker_id=self.worker_id,
        )
        ctx.log.info("claimed by %s", self.worker_id)
        thread = threading.Thread(target=self._run_one, args=(ctx,), name=f"task-{ctx.task_id}", daemon=True)
        with self._lock:
            self._held[ctx.task_pk] = _Held(ctx, thread)
        thread.start()

    def _run_one(self, ctx: TaskContext) -> None:
        try:
            outcome = run_task(ctx)
        except Exception:  # run_task records failures itself; this only guards the worker thread
            ctx.log.exception("task thread crashed")
            outcome = "crashed"
        self.finished.append((ctx.task_id, outcome))
        # The place is free now, not when this thread has exited: the loop this wakes must see it free, or it
        # finds the thread still alive, claims nothing and sleeps a whole poll.
        with self._lock:
            self._held.pop(ctx.task_pk, None)
        self._wake.set()

    def _reap(self) -> None:
        with self._lock:
            for pk in [pk for pk, h in self._held.items() if not h.thread.is_alive()]:
                del self._held[pk]

    def _join_all(self) -> None:
        with self._lock:
            threads = [h.thread for h in self._held.values()]
        for thread in threads:
            thread.join()
        self._reap()

    def _runnable_exists(self) -> bool:
        """Whether any task could still be claimed (runnable and not held by a live lease)."""
        try:
            with self.db.session() as session:
                return q.runnable_task_exists(session, utcnow())
        except Exception:
            log.exception("worker %s: cannot check for work", self.worker_id)
            return True

    # ------------------------------------------------------------------ heartbeat
    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(self.settings.heartbeat_seconds):
            self.beat()
            self._register()
        self.beat()

    def _register(self) -> None:
        """This worker's row in the registry (``q.register_worker``), refreshed at every heartbeat."""
        try:
            with self.db.transaction() as session:
                q.register_worker(session, worker_id=self.worker_id, hostname=socket.gethostname(), pid=os.getpid(),
                                  slots=self.settings.worker_task_slots, now=utcnow())
        except Exception:  # the registry only shares work out: a worker that cannot write it still works
            log.warning("worker %s: cannot update the worker registry", self.worker_id, exc_info=True)

    def _forget(self) -> None:
        try:
            with self.db.transaction() as session:
                q.forget_worker(session, self.worker_id)
        except Exception:  # its row goes stale and stops counting after a few heartbeats
            log.debug("worker %s: cannot leave the worker registry", self.worker_id, exc_info=True)

    def beat(self) -> None:
        """Renew the leases of every held task; flag lost leases and relayed cancels."""
        with self._lock:
            held = dict(self._held)
        if not held:
            return
        try:
            with self.db.transaction() as session:
                alive, cancelled = q.renew_leases(
                    session,
                    worker_id=self.worker_id,
                    task_pks=list(held),
                    now=utcnow(),
                    lease_seconds=self.settings.lease_seconds,
                )
        except Exception:  # e.g. PostgreSQL restarting: keep working, renew at the next beat
            log.warning("worker %s: heartbeat failed; will retry", self.worker_id, exc_info=True)
            return
        for pk, h in held.items():
            if pk not in alive and h.thread.is_alive():
                h.ctx.lost.set()
            if pk in cancelled:
                h.ctx.cancel.set()

