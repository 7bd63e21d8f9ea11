"""Task processes: a ``python -m pipeline work`` worker runs each claimed task in a process of its own.

One Python process running several tasks shares one GIL among all their threads: when the tasks' provider calls
return together, each task's storing, committing and image processing waits for the others', and the provider
slots idle meanwhile. The worker process still claims, heartbeats and relays cancel and lease loss; each task runs
in one of ``WORKER_TASK_SLOTS`` long-lived child processes (``python -m pipeline.worker.task_process``), started and
warmed up with the worker, which run one task at a time. Measured with the executor benchmark (cap 4, four tasks
at once, six interleaved pairs of runs): 1.21 of the latency-bound ideal in threads, 1.15 in task processes.

The parent speaks length-prefixed pickles over the child's stdin and stdout (``pipeline.stages.review.frames``). In:
``("init", settings)`` first, then ``("run", task_pk, worker_id)`` and ``("signal", task_pk, name)`` (name: one
of ``SIGNALS``). Out: ``("ready",)`` once warmed up, and ``("done", task_pk, outcome)``. A child whose stdin
closes (the worker died) stops its task at the next unit, which hands the lease back. A child that dies mid-task
has its task handed back by the parent, and is replaced.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import select
import signal
import sys
import threading
from typing import Any

from pipeline.stages.review.frames import read_frame, start_child, stop_child, write_frame

log = logging.getLogger(__name__)

SIGNALS = ("cancel", "lost", "stopping")  # the TaskContext events the parent relays
RELAY_SECONDS = 0.1  # how often the parent looks for a cancel, lost lease or stop to relay while a task runs


class TaskProcessDied(Exception):
    pass


class TaskProcess:
    """The parent's handle on one child."""

    def __init__(self, settings: Any) -> None:
        # Unbuffered pipes: select() on the reply pipe must see every byte the child wrote.
        self.proc = start_child("pipeline.worker.task_process", bufsize=0)
        self.ready = threading.Event()
        self._reading = threading.Lock()  # one reader of the replies at a time (the warm-up wait, or a task)
        self._send(("init", settings.model_dump()))  # the worker's own settings, not a re-read of the environment

    def wait_ready(self, timeout: float) -> bool:
        """Until the child has loaded what a task needs (or ``timeout``)."""
        with self._reading:
            if not self.ready.is_set() and self._poll(timeout):
                self._read()
        return self.ready.is_set()

    def run(self, ctx: Any) -> str:
        """Run the claimed task of ``ctx`` (the parent's TaskContext) in the child; relay its events; the outcome."""
        with self._reading:
            return self._run(ctx)

    def _run(self, ctx: Any) -> str:
        self._send(("run", ctx.task_pk, ctx.worker_id))
        relayed: set[str] = set()
        while True:
            for name in SIGNALS:
                if name not in relayed and getattr(ctx, name).is_set():
                    self._send(("signal", ctx.task_pk, name))
                    relayed.add(name)
            if self._poll(RELAY_SECONDS):
                reply = self._read()
                if reply[0] == "done" and reply[1] == ctx.task_pk:
                    return str(reply[2])

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        stop_child(self.proc, timeout=10)

    def _poll(self, timeout: float) -> bool:
        assert self.proc.stdout is not None
        readable, _, _ = select.select([self.proc.stdout], [], [], timeout)
        return bool(readable)

    def _read(self) -> tuple[Any, ...]:
        assert self.proc.stdout is not None
        try:
            reply = read_frame(self.proc.stdout)
        except (OSError, EOFError) as exc:
            raise TaskProcessDied(f"the task process stopped (exit code {self.proc.poll()}): {exc}") from None
        if reply[0] == "ready":
            self.ready.set()
        return tuple(reply)

    def _send(self, message: tuple[Any, ...]) -> None:
        assert self.proc.stdin is not None
        try:
            write_frame(self.proc.stdin, message)
        except OSError as exc:
            raise TaskProcessDied(f"the task process stopped (exit code {self.proc.poll()}): {exc}") from None


class TaskProcesses:
    """``size`` children for one worker, started at once (they warm up in parallel), each running one task at a
    time; a child that died is replaced by a new one."""

    def __init__(self, settings: Any, size: int) -> None:
        # The identity check's face-analysis processes are the worker's, shared out among its task processes.
        self.settings = settings.model_copy(update={"identity_processes": max(1, settings.identity_processes // size)})
        self.size = size
        self._idle: list[TaskProcess] = []
        self._lock = threading.Lock()
        self._closed = False

    def start(self, timeout: float = 120) -> bool:
        """Start the children and wait until they are warm; whether all of them are."""
        children = [TaskProcess(self.settings) for _ in range(self.size)]
        with self._lock:
            self._idle.extend(children)
        return all([child.wait_ready(timeout) for child in children])

    def run(self, ctx: Any) -> str:
        child = self._take()
        try:
            outcome = child.run(ctx)
        except BaseException:
            child.proc.kill()  # mid-task: its state and its pipes are unknown
            child.close()
            raise
        self._give_back(child)
        return outcome

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for child in idle:
            child.close()

    def _take(self) -> TaskProcess:
        with self._lock:
            while self._idle:
                child = self._idle.pop()
                if child.alive():
                    return child
                child.close()
        return TaskProcess(self.settings)  # none idle (a child died and was not replaced yet): a new one

    def _give_back(self, child: TaskProcess) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(child)
                return
        child.close()


# ------------------------------------------------------------------------------------------------------ child
def serve() -> None:
    """The child's loop: warm up, then run the tasks it is given, one at a time, until its stdin closes."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # anything printed by a library must not corrupt the frames
    from db.session import Database
    from pipeline.core.config import Settings
    from pipeline.providers.registry import ProviderCache
    from pipeline.storage import open_storage
    from pipeline.worker.executor import warm_database, warm_up

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    kind, values = read_frame(stdin)
    assert kind == "init"
    settings = Settings(_env_file=None, **values)  # type: ignore[call-arg]
    db = Database(settings.database_url)
    storage = open_storage(settings.storage_url, endpoint_url=settings.s3_endpoint_url)
    providers = ProviderCache(settings)
    with contextlib.suppress(Exception):  # only a head start: a task builds (and reports) its providers itself
        providers.for_names(settings.persona_provider, settings.image_provider)
    warm_up()
    warm_database(db)
    write_frame(stdout, ("ready",))

    runs: queue.Queue[tuple[int, str] | None] = queue.Queue()
    signals: dict[int, set[str]] = {}  # relayed per task, kept until its context exists
    current: dict[int, Any] = {}
    lock = threading.Lock()

    def read() -> None:
        while True:
            try:
                message = read_frame(stdin)
            except (OSError, EOFError):  # the worker is gone: stop the task at its next unit (the lease goes back)
                stop()
                return
            if message[0] == "run":
                runs.put((message[1], message[2]))
            elif message[0] == "signal":
                with lock:
                    signals.setdefault(message[1], set()).add(message[2])
                    if message[1] in current:
                        getattr(current[message[1]], message[2]).set()

    def stop() -> None:  # as if the worker had gone: the task stops at its next unit and hands its lease back
        with lock:
            for ctx in current.values():
                ctx.stopping.set()
        runs.put(None)

    # Ctrl-C reaches the whole process group: the worker stops its tasks itself (relayed as "stopping"). A SIGTERM
    # of this process alone stops its task gracefully (from a thread: the handler must not take a lock).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda _signum, _frame: threading.Thread(target=stop, daemon=True).start())
    threading.Thread(target=read, name="task-process-reader", daemon=True).start()
    while (item := runs.get()) is not None:
        task_pk, worker_id = item
        outcome = _run(db, storage, settings, providers, task_pk, worker_id, current, signals, lock)
        write_frame(stdout, ("done", task_pk, outcome))


def _run(db: Any, storage: Any, settings: Any, providers: Any, task_pk: int, worker_id: str,
         current: dict[int, Any], signals: dict[int, set[str]], lock: threading.Lock) -> str:
    import db.queries as q
    from pipeline.stages.context import TaskContext
    from pipeline.stages.run import fail_unstartable, run_task

    try:
        with db.session() as session:
            task = q.get_task_by_pk(session, task_pk)
        if task is None:
            return "missing"
        try:
            chosen = providers.for_snapshot(task.config_snapshot)
        except Exception as exc:  # e.g. a provider this version does not have
            fail_unstartable(db, task_pk, worker_id, f"cannot start: {exc}")
            return "failed"
        ctx = TaskContext.from_task(task, db=db, storage=storage, settings=settings, providers=chosen,
                                    worker_id=worker_id)
        with lock:
            current[task_pk] = ctx
            for name in signals.get(task_pk, ()):
                getattr(ctx, name).set()
        return run_task(ctx)
    except Exception:  # run_task records a task's failures itself; this only keeps the process serving
        log.exception("task %s: the task process could not run it", task_pk)
        return "crashed"
    finally:
        with lock:
            current.pop(task_pk, None)
            signals.pop(task_pk, None)


if __name__ == "__main__":
    serve()
