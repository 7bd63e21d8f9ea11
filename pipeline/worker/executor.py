"""The executor: a small DB-backed worker, the same in the Streamlit process and in ``python -m pipeline work``.

A worker claims tasks atomically (``db.queries.claim_next_task``: the global ``max_concurrent_tasks`` cap holds
across every process and host), runs each in its own thread (the app's worker) or in a task process of its own
(``python -m pipeline work``, see ``pipeline.worker.task_process``), and renews its leases from a heartbeat thread,
which also relays cancel requests. A task whose worker died has its lease expire and is resumed elsewhere.

Each worker keeps a row in the registry (``workers``) fresh at every heartbeat, so that waiting tasks are shared
among the live workers in proportion to their free places (``q.fair_share``) instead of all taken by the first
to poll. An idle worker looks for work every ``POLL_SECONDS`` with a read (``_claim_worthwhile``: a task waiting
and a free place under the cap), on SQLite also as soon as another connection commits (``CommitWatch``); only
then does it take the claim's write lock. A task finishing in this process
wakes the loop at once, so a freed place is re-claimed without waiting for the next poll. At start a
background thread loads the configured providers and what the review stage needs (``warm_up``), so the first
task does not stall on them.
"""

from __future__ import annotations

import io
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.orm import configure_mappers

import db.queries as q
from db.models import GenerationTask, utcnow
from db.session import CommitWatch, Database
from pipeline.core.config import Settings
from pipeline.providers.registry import ProviderCache
from pipeline.stages.context import TaskContext
from pipeline.stages.run import fail_unstartable, release_task, run_task
from pipeline.storage import Storage
from pipeline.worker.task_process import TaskProcessDied, TaskProcesses

log = logging.getLogger(__name__)

WORKER_LIVE_BEATS = 3  # a registered worker not seen for this many heartbeats no longer counts (killed, hung)
POLL_SECONDS = 0.05  # an idle poll is one indexed read, ~0.25 ms of CPU (0.5% of a core); the write lock only when worthwhile
COMMIT_LOOK_SECONDS = 0.01  # on SQLite, between two polls: a look at whether anything was committed (microseconds)
WATCHED_POLL_SECONDS = 0.5  # on SQLite, the poll without a commit: for what no commit announces (an expired lease)

_warmed = threading.Lock()
_warm_started = False


def warm_up() -> None:
    """Load once per process what the review stage needs on first use (langdetect's language profiles, scipy
    through imagehash, datasketch: ~1.5-3 s of imports), before the first task gets there; and run the grid
    processing once on a small synthetic grid (its first run costs ~25 ms more than the next: the tile pool's
    threads, the codecs, numpy's first calls) and compute the style randomiser's tables (~30 ms)."""
    global _warm_started
    with _warmed:
        if _warm_started:
            return
        _warm_started = True
    start = time.perf_counter()
    try:
        from PIL import Image

        from pipeline.stages.images.imaging import image_hash, load_tables, process_grid
        from pipeline.stages.review.quality import detect_language, near_duplicate_texts

        buffer = io.BytesIO()
        Image.new("RGB", (32, 32), (120, 130, 140)).save(buffer, format="JPEG")
        image_hash(buffer.getvalue())
        near_duplicate_texts({1: "warming up the checks", 2: "warming up the checks!"})
        detect_language("A sentence long enough for the language detector to load its profiles.")
        process_grid(_synthetic_grid(), crop_borders=True, randomize=True, seed=0, persona_key="warm-up",
                     first_index=0)
        load_tables()
    except Exception:  # only a head start: the review stage loads (and reports) the same things itself
        log.debug("warm-up failed", exc_info=True)
        return
    log.info("review checks and imaging loaded in %.1f s", time.perf_counter() - start)


def _synthetic_grid(side: int = 256) -> bytes:
    """A PNG 2x2 grid of four flat tiles on white gutters, as a provider's grid is laid out."""
    from PIL import Image, ImageDraw

    grid = Image.new("RGB", (side, side), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    gutter, cell = side // 32, (side - 3 * (side // 32)) // 2
    for i, colour in enumerate([(180, 140, 120), (90, 110, 150), (140, 160, 100), (200, 180, 160)]):
        x, y = gutter + (i % 2) * (cell + gutter), gutter + (i // 2) * (cell + gutter)
        draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill=colour)
    buffer = io.BytesIO()
    grid.save(buffer, format="PNG")
    return buffer.getvalue()


def warm_database(db: Database) -> None:
    """Open a connection, configure the ORM's mappers and compile the reads a task starts with, against a task
    that cannot exist: a task process's first task then starts ~30 ms sooner (the mappers alone take ~9 ms)."""
    try:
        configure_mappers()
        with db.session() as session:
            q.warm_task_reads(session)
    except Exception:  # only a head start: the first task runs (and reports) the same reads itself
        log.debug("database warm-up failed", exc_info=True)


def default_worker_id() -> str:
    return f"{socket.gethostname()[:30]}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass
class _Held:
    ctx: TaskContext
    thread: threading.Thread


class Worker:
    """Claims and runs tasks until stopped. Thread-safe ``stop()``; ``run()`` blocks."""

    def __init__(
        self,
        db: Database,
        storage: Storage,
        settings: Settings,
        *,
        worker_id: str | None = None,
        providers: ProviderCache | None = None,
        poll_seconds: float = POLL_SECONDS,
        task_processes: bool = False,
    ):
        self.db = db
        self.storage = storage
        self.settings = settings
        self.worker_id = worker_id or default_worker_id()
        self.providers = providers or ProviderCache(settings)
        self.poll_seconds = poll_seconds
        # Each task in a child process of its own (``pipeline.worker.task_process``), or in a thread of this one.
        self._processes = TaskProcesses(settings, settings.worker_task_slots) if task_processes else None
        self._held: dict[int, _Held] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self.finished: list[tuple[str, str]] = []  # (task_id, outcome), for callers and tests

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
        log.info("worker %s started (slots=%d)", self.worker_id, self.settings.worker_task_slots)
        self._register()
        # A long-running worker starts its task processes at once; ``until_idle`` (a batch) starts them as claimed.
        threading.Thread(target=self._warm_up, args=(not until_idle,), name="warm-up", daemon=True).start()
        heartbeat = threading.Thread(target=self._heartbeat_loop, name=f"heartbeat-{self.worker_id}", daemon=True)
        heartbeat.start()
        commits = self._watch_commits()
        try:
            while not self._stop.is_set():
                polled = time.monotonic()
                self._reap()
                claimed = False
                if self._free_slots() > 0 and self._claim_worthwhile():
                    claimed = self._claim_and_start()
                if claimed:
                    continue  # there may be more runnable work: claim again at once
                if until_idle and not self._held and not self._runnable_exists():
                    break
                self._idle(commits, polled)
                self._wake.clear()
        finally:
            if commits is not None:
                commits.close()
            self.stop()
            self._join_all()
            if self._processes is not None:
                self._processes.close()
            self._forget()
            log.info("worker %s stopped", self.worker_id)

    def _watch_commits(self) -> CommitWatch | None:
        try:
            return self.db.watch_commits()
        except Exception:  # only a shortcut: the polls find the work anyway
            log.debug("cannot watch the database's commits", exc_info=True)
            return None

    def _idle(self, commits: CommitWatch | None, polled: float) -> None:
        """Until the next poll or a wake-up. On SQLite the next poll comes when another connection has committed
        (a look every ``COMMIT_LOOK_SECONDS``), but never sooner than ``poll_seconds`` after the last one, and
        ``WATCHED_POLL_SECONDS`` after it at the latest: a task submitted to an idle worker is claimed within
        ~10 ms instead of half a poll (25 ms) on average, and while tasks commit all the time, idle workers poll
        no more often than without the watch."""
        if commits is None:
            self._wake.wait(self.poll_seconds)
            return
        soonest, latest = polled + self.poll_seconds, polled + max(self.poll_seconds, WATCHED_POLL_SECONDS)
        committed = False
        while (now := time.monotonic()) < latest:
            if committed and now >= soonest:
                return
            if self._wake.wait(min(COMMIT_LOOK_SECONDS if not committed else soonest - now, latest - now)):
                return
            if not committed:
                try:
                    committed = commits.changed()
                except Exception:  # e.g. the file replaced under us: poll as without the watch
                    committed = True

    def _warm_up(self, start_processes: bool = True) -> None:
        """The configured providers first (their client libraries load in ~0.2 s; a claim needs them), then the
        review's checks (``warm_up``), or the task processes, which load both themselves."""
        try:
            self.providers.for_names(self.settings.persona_provider, self.settings.image_provider)
        except Exception:  # only a head start: a claim builds (and reports) the same providers itself
            log.debug("provider warm-up failed", exc_info=True)
        if self._processes is None:
            warm_up()
            warm_database(self.db)
            log.info("worker %s is ready (tasks run in threads)", self.worker_id)
            return
        if not start_processes:
            return
        try:
            warm = self._processes.start()
        except Exception:  # a task starts (and reports) its own process when none is idle
            log.warning("worker %s: cannot start the task processes", self.worker_id, exc_info=True)
            return
        if warm:
            log.info("worker %s is ready (%d task processes)", self.worker_id, self._processes.size)
        else:
            log.warning("worker %s: not every task process warmed up in time; a task waits for its own", self.worker_id)

    def _free_slots(self) -> int:
        with self._lock:
            return self.settings.worker_task_slots - len(self._held)

    def _claim_worthwhile(self) -> bool:
        """A cheap read before the claim's write lock (``q.claim_worthwhile``)."""
        try:
            with self.db.session() as session:
                return q.claim_worthwhile(session, utcnow())
        except Exception:  # e.g. the database restarting: let the claim try (and log) as before
            return True

    def _claim_and_start(self) -> bool:
        """Claim this worker's share of the waiting tasks (``q.fair_share``: all of them, up to its free places and the
        cap, when it is the only live worker) in one transaction, then start them: the tasks of a burst of submits
        start together, not one claim transaction apart."""
        tasks = []
        try:
            with self.db.transaction(immediate=True) as session:
                now = utcnow()
                live = now - timedelta(seconds=WORKER_LIVE_BEATS * self.settings.heartbeat_seconds)
                # Tasks in processes of their own gain nothing from another worker on this machine's cores.
                same_host = socket.gethostname() if self._processes is not None else None
                share = q.fair_share(session, worker_id=self.worker_id, free=self._free_slots(), now=now,
                                     seen_after=live, exclude_host=same_host)
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
        # After the claim's commit: a provider's first load imports its client libraries (~0.2 s), which must not
        # hold the database's write lock.
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
            outcome = run_task(ctx) if self._processes is None else self._processes.run(ctx)
        except TaskProcessDied as exc:  # killed, out of memory: another claim resumes the task from what it committed
            ctx.log.error("%s; the task is handed back", exc)
            release_task(self.db, ctx.task_pk, self.worker_id)
            outcome = "crashed"
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


def run_until_idle(db: Database, storage: Storage, settings: Settings, *, worker_id: str | None = None) -> Worker:
    """Run a worker until nothing is runnable (tests and ``work --until-idle``)."""
    worker = Worker(db, storage, settings, worker_id=worker_id, poll_seconds=0.2)
    worker.run(until_idle=True)
    return worker
