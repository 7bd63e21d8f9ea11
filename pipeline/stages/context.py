"""What a running task carries: its row's values, its providers and storage, and the guards on every write.

Every write goes through ``TaskContext.guarded()``, which re-checks in the same transaction that this worker
still holds the lease (row-locked on PostgreSQL): a worker that lost its lease stops touching the task.
Between units of work ``checkpoint()`` honours cancel, lease loss and worker shutdown. Every provider call goes
through ``TaskContext.provider_call(kind)``, which holds a slot of that provider's limit over all workers and hosts
(``pipeline.stages.limits``), stops the task's calls to a provider that refuses most of them, records each call's
usage and cost and holds the task to its budget (``pipeline.stages.usage``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

import db.queries as q
from db.models import GenerationTask, utcnow
from db.session import Database
from pipeline.core.config import Settings
from pipeline.core.errors import LeaseLost, PipelineError, ProviderError, RefusalError, TaskCancelled
from pipeline.core.usage import provider_key
from pipeline.providers.registry import Providers
from pipeline.stages.limits import CallRecord, ProviderFailing, ProviderLimiter, limiter_for
from pipeline.stages.usage import UsageMeter
from pipeline.storage import Storage

logger = logging.getLogger(__name__)


class WorkerStopping(PipelineError):
    """The worker is shutting down: release the lease after the current unit."""


class TaskLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Prefixes every line with the task id."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        return f"[task {self.extra['task_id'] if self.extra else '?'}] {msg}", kwargs


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
    user_id: int | None = None
    budget: float | None = None  # dollars over all the task's runs; None: no budget
    status: str = ""  # the status when claimed: a stage writes its own only when it differs
    lost: threading.Event = field(default_factory=threading.Event)
    cancel: threading.Event = field(default_factory=threading.Event)
    stopping: threading.Event = field(default_factory=threading.Event)
    log: TaskLog = field(init=False)
    limiter: ProviderLimiter = field(init=False)
    calls: CallRecord = field(init=False)
    usage: UsageMeter = field(init=False)

    def __post_init__(self) -> None:
        self.log = TaskLog(logger, {"task_id": self.task_id})
        self.limiter = limiter_for(self.db)
        self.calls = CallRecord()
        self.usage = UsageMeter(self.db, task_pk=self.task_pk, task_id=self.task_id, user_id=self.user_id,
                                worker_id=self.worker_id, budget=self.budget, note=self.note)

    @contextlib.contextmanager
    def provider_call(self, kind: str) -> Iterator[None]:
        """Around one call to the ``kind`` provider ("persona", "prompt" or "image"; the call runs in this thread):
        waits for a slot of that provider's limit, shared by every task, worker and host (cancel and a lost lease
        are honoured while waiting), and gives it back after; the call's usage is recorded. Raises ``ProviderFailing``
        once the provider refused most of this task's recent calls for good (a revoked key, an exhausted quota), and
        ``BudgetReached`` (one) once this call would take the task over its budget."""
        def checkpoint() -> None:  # while waiting for a slot, and once admitted
            self.checkpoint()
            if self.calls.stopped is not None:
                raise ProviderFailing(kind, self.calls.stopped)

        checkpoint()
        provider = provider_key(kind, self.snapshot, self.settings.persona_provider, self.settings.image_provider)
        try:
            # The price is reserved before the slot is waited for and the call recorded after it is given back:
            # the slot is held for the call alone.
            with self.usage.call(provider, kind) as metered, \
                    self.limiter.call(provider, kind, task=self.task_pk, task_id=self.task_id,
                                      worker_id=self.worker_id, checkpoint=checkpoint):
                checkpoint()
                with metered.timed():
                    yield
        except ProviderFailing:
            raise
        except RefusalError:  # the content was refused, not the account: the provider works
            self._record(kind, None)
            raise
        except ProviderError as exc:
            self._record(kind, None if exc.retryable else exc)
            raise
        self._record(kind, None)

    def _record(self, kind: str, failure: ProviderError | None) -> None:
        note = self.calls.add(kind, failure)
        if note is not None:
            self.note(note)

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
            user_id=task.user_id,
            budget=task.budget,
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
        with contextlib.suppress(LeaseLost), self.guarded() as (session, task):
            q.add_errors(session, task, [problem])
