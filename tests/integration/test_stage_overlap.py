"""The data stage and the image stage overlap: a persona's images start once its batch is stored, and a run
interrupted while both stages run resumes from what was committed, losing and duplicating nothing."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.exc import OperationalError

import db.queries as q
from db.models import GenerationTask, PersonaStatus, TaskStatus, utcnow
from db.session import Database
from pipeline.core.domain import PersonaBatch, PersonaRequest
from pipeline.providers.registry import ProviderCache, Providers
from pipeline.stages.images import stage
from pipeline.worker.executor import Worker
from tests.factories import local_storage, make_settings, make_user, results_of, run_worker, submit, task_row
from tests.integration.test_executor import referenced_keys, stored_files

COUNT = 30  # three batches of 10, all requested at once (up to 5 in flight)
LAST_BATCH = 3
DEADLINE_S = 60.0  # generous: the machine is shared and loaded


class _GatedPersonas:
    """The offline persona provider, except that the last batch is answered only once ``gate`` is opened."""

    def __init__(self, inner: Any, gate: threading.Event):
        self.inner, self.gate = inner, gate

    def generate(self, request: PersonaRequest) -> PersonaBatch:
        if request.batch_number >= LAST_BATCH:
            self.gate.wait(2 * DEADLINE_S)
        return self.inner.generate(request)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class _GatedProviders(ProviderCache):
    def __init__(self, settings: Any, gate: threading.Event):
        super().__init__(settings)
        self.gate = gate

    def for_names(self, persona: str, image: str) -> Providers:
        base = super().for_names(persona, image)
        return Providers(_GatedPersonas(base.persona, self.gate), base.prompt, base.image)


def _poll(condition: Callable[[], bool], deadline_s: float = DEADLINE_S) -> bool:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def _batches(database: Database, task_id: str) -> set[int]:
    return {r.batch_number for r in results_of(database, task_id)}


def _with_images(database: Database, task_id: str) -> list[Any]:
    return [r for r in results_of(database, task_id) if (r.image_count or 0) > 0]


def test_a_persona_has_images_before_the_last_batch_is_stored(
    database: Database, db_url: str, tmp_path: Path
) -> None:
    settings = make_settings(db_url, tmp_path)
    gate = threading.Event()
    task_id = submit(database, settings, make_user(database), count=COUNT, images=8)
    worker = Worker(database, local_storage(tmp_path), settings, providers=_GatedProviders(settings, gate),
                    poll_seconds=0.05)
    thread = threading.Thread(target=worker.run, kwargs={"until_idle": True})
    thread.start()
    try:
        overlapped = _poll(lambda: any(r.status == PersonaStatus.COMPLETED.value
                                       for r in _with_images(database, task_id)))
        batches_then = _batches(database, task_id)
    finally:
        gate.set()
        thread.join(timeout=120)
    assert not thread.is_alive()
    assert overlapped, "no persona got its images while the last batch was still being generated"
    assert LAST_BATCH not in batches_then
    assert task_row(database, task_id).status == TaskStatus.COMPLETED.value
    assert len(results_of(database, task_id)) == COUNT


def test_an_overlapped_run_interrupted_resumes_without_losing_or_duplicating_anything(
    database: Database, db_url: str, tmp_path: Path
) -> None:
    """The worker loses the task (another worker took it over, as after a stall) while personas of the first
    batches are half made and the last batch is not stored yet; a later worker resumes it from what was
    committed: every persona once, each with its 8 images once, in order, and no object left unreferenced."""
    settings = make_settings(db_url, tmp_path, heartbeat_seconds=0.1)
    storage = local_storage(tmp_path)
    gate = threading.Event()
    task_id = submit(database, settings, make_user(database), count=COUNT, images=8)
    worker = Worker(database, storage, settings, providers=_GatedProviders(settings, gate), poll_seconds=0.05,
                    worker_id="first")
    thread = threading.Thread(target=worker.run, kwargs={"until_idle": True})
    thread.start()
    try:
        started = _poll(lambda: any(r.status == PersonaStatus.COMPLETED.value
                                    for r in _with_images(database, task_id)))
        with database.transaction(immediate=True) as session:  # taken over: the first worker must stop
            task = q.get_task(session, task_id)
            assert task is not None
            task.worker_id, task.lease_expires_at = "other", utcnow() + timedelta(minutes=5)
        # the first worker notices at its next heartbeat and stops; it never commits the last batch
        stopped = _poll(lambda: not any(t.name.startswith(f"img-{task_id}") for t in threading.enumerate()))
    finally:
        gate.set()
        worker.stop()  # it would wait for the task it lost to become claimable again
        thread.join(timeout=120)
    assert not thread.is_alive()
    assert started and stopped
    before = {r.id: (r.status, list(r.images or [])) for r in results_of(database, task_id)}
    assert LAST_BATCH not in _batches(database, task_id)
    assert any(status == PersonaStatus.COMPLETED.value for status, _ in before.values())

    with database.transaction(immediate=True) as session:  # the other worker died: its lease expires
        task = q.get_task(session, task_id)
        assert task is not None
        task.lease_expires_at = utcnow() - timedelta(seconds=1)
    run_worker(database, storage, settings, worker_id="second")

    task_after = task_row(database, task_id)
    assert task_after.status == TaskStatus.COMPLETED.value, task_after.error_log
    rows = results_of(database, task_id)
    assert len(rows) == COUNT
    assert len({(r.batch_number, r.slot) for r in rows}) == COUNT
    assert len({(r.firstname, r.lastname) for r in rows}) == COUNT
    for row in rows:
        assert row.status == PersonaStatus.COMPLETED.value
        assert row.image_count == 8 and len(row.images) == 8 and len(set(row.images)) == 8
        assert [image["index"] for image in row.image_meta["images"]] == list(range(8))
        assert [block["block"] for block in row.image_meta["blocks"]] == [0, 1]
        status, images = before.get(row.id, (None, []))
        if status == PersonaStatus.COMPLETED.value:
            assert row.images == images  # finished before the interruption: kept as it was
    assert referenced_keys(rows) == stored_files(storage.root)  # nothing orphaned, nothing missing
    with database.session() as session:
        assert session.get(GenerationTask, task_after.id).attempts == 2


class _HeldPrompts:
    """The offline grid-prompt provider, except that its first call signals ``held`` and waits for ``release``."""

    def __init__(self, inner: Any, held: threading.Event, release: threading.Event):
        self.inner, self.held, self.release = inner, held, release
        self.first = threading.Lock()

    def grid_prompt(self, *args: Any, **kwargs: Any) -> str:
        if self.first.acquire(blocking=False):
            self.held.set()
            self.release.wait(DEADLINE_S)
        return str(self.inner.grid_prompt(*args, **kwargs))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_persona_under_way_when_the_database_drops_is_resumed_not_failed(
    database: Database, db_url: str, tmp_path: Path, monkeypatch: Any
) -> None:
    """The database goes away (a PostgreSQL restart) while a persona waits on its grid prompt: the stage stops,
    and the persona, once its call returns, must not fail for good on the stage's own shutdown (its grid can no
    longer be scheduled); it stays pending and the resumed task completes it."""
    settings = make_settings(db_url, tmp_path, lease_seconds=1.0, heartbeat_seconds=0.2)
    held, release = threading.Event(), threading.Event()
    real_store = stage._store_block
    dropped = threading.Event()

    def store_block(*args: Any, **kwargs: Any) -> bool:  # another persona's commit finds the database gone
        if held.is_set() and not dropped.is_set():
            dropped.set()
            threading.Timer(0.5, release.set).start()  # the held call returns once the stage is shutting down
            raise OperationalError("UPDATE ...", {}, Exception("the database system is shutting down"))
        return real_store(*args, **kwargs)

    monkeypatch.setattr(stage, "_store_block", store_block)
    base = ProviderCache(settings)

    class _Providers(ProviderCache):
        def for_names(self, persona: str, image: str) -> Providers:
            inner = base.for_names(persona, image)
            return Providers(inner.persona, _HeldPrompts(inner.prompt, held, release), inner.image)

    task_id = submit(database, settings, make_user(database), count=10, images=4)
    run_worker(database, local_storage(tmp_path), settings, providers=_Providers(settings))
    assert dropped.is_set()
    task = task_row(database, task_id)
    assert task.status == TaskStatus.COMPLETED.value, task.error_log
    assert all(r.status == PersonaStatus.COMPLETED.value for r in results_of(database, task_id))
