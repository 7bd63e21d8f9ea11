"""Running the identity check for a task: in the background while images are made, then catching up.

Each persona whose images are complete is handed to the task's identity lane: ``IDENTITY_PROCESSES`` threads that
read the stored images and wait on the analysis processes (``pipeline.stages.review.identity``), so generation never waits for
it. The lane may
lag behind; before the quality review, ``catch_up`` waits for it and analyses every completed persona that has
no current analysis (after a crash or a resume, nothing is lost: the analysis is recomputed from the stored
images). A persona's analysis is stored in ``image_meta['identity']``.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import db.queries as q
from db.models import GenerationResult, PersonaStatus
from pipeline.core.errors import LeaseLost, PipelineError, StorageError, TaskCancelled
from pipeline.core.identity import VERSION
from pipeline.stages.context import TaskContext
from pipeline.stages.review.identity import CHILD_POOL, analyze_images, persona_record
from pipeline.storage.faces import FaceLibrary

log = logging.getLogger(__name__)


def enabled(ctx: TaskContext) -> bool:
    return bool((ctx.snapshot.get("identity") or {}).get("enabled"))


def is_current(row: GenerationResult) -> bool:
    """Whether the stored analysis covers the persona's current base and every variation."""
    meta = row.image_meta or {}
    record = meta.get("identity") or {}
    return (
        record.get("version") == VERSION
        and record.get("base_key") == row.base_image_url
        and len(record.get("images") or []) == len(meta.get("images") or [])
    )


def _read(ctx: TaskContext, key: str | None) -> bytes | None:
    if not key:
        return None
    try:
        return ctx.storage.get(key)
    except StorageError:
        return None  # a missing object shows as "unreadable": no face can be found in it


def _reference(ctx: TaskContext, ref: str | None) -> bytes | None:
    if not ref:
        return None
    try:
        library = FaceLibrary.from_settings(ctx.settings)
        return library.read(ref) if library is not None else None
    except PipelineError as exc:
        ctx.log.warning("identity: library face %s unreadable (%s); leakage not measured", ref, exc)
        return None


def _processes(ctx: TaskContext) -> int:
    """``IDENTITY_PROCESSES``: analysis processes this task may keep busy (the shared pool grows to it)."""
    processes = max(1, int(ctx.settings.identity_processes))
    CHILD_POOL.processes = max(CHILD_POOL.processes, processes)
    return processes


def analyze_persona(ctx: TaskContext, result_id: int) -> bool:
    """Analyse one completed persona unless its analysis is current; returns whether it analysed."""
    with ctx.db.session() as session:
        row = q.get_result(session, result_id)
        if row is None or row.status != PersonaStatus.COMPLETED.value or is_current(row):
            return False
        meta = dict(row.image_meta or {})
        base_key = row.base_image_url
        keys = [image.get("key") for image in meta.get("images") or []]
        face_ref = (meta.get("base") or {}).get("face_reference")
    images = [_read(ctx, base_key), *(_read(ctx, k) for k in keys)]
    reference = _reference(ctx, face_ref)
    payload = [data if data is not None else b"" for data in images]
    if reference is not None:
        payload.append(reference)
    found = analyze_images(payload)
    record = persona_record(found[0], found[1 : 1 + len(keys)], found[-1] if reference is not None else None)
    record["base_key"] = base_key
    if face_ref:
        record["face_reference"] = face_ref
    with ctx.guarded() as (session, _task):
        row = q.get_result(session, result_id)
        if row is None or row.base_image_url != base_key or len((row.image_meta or {}).get("images") or []) != len(keys):
            return False  # changed meanwhile (cannot happen while we hold the lease; be safe)
        q.set_identity(session, row, record)
    return True


class IdentityLane:
    """Background threads of a running task that analyse personas as they complete (one per analysis process)."""

    def __init__(self, ctx: TaskContext) -> None:
        self.ctx = ctx
        self._pool = ThreadPoolExecutor(_processes(ctx), thread_name_prefix=f"identity-{ctx.task_id}")

    def submit(self, result_id: int) -> None:
        self._pool.submit(self._run, result_id)

    def _run(self, result_id: int) -> bool:
        try:
            return analyze_persona(self.ctx, result_id)
        except (LeaseLost, TaskCancelled):
            return False  # the task stops; whatever was not analysed is caught up when it resumes
        except Exception as exc:  # never disturb generation: catch_up tries again and reports
            self.ctx.log.warning("identity: persona %d not analysed yet: %s", result_id, exc)
            return False

    def wait(self) -> None:
        self._pool.shutdown(wait=True)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def catch_up(ctx: TaskContext, lane: IdentityLane | None) -> int:
    """Wait for the lane, then analyse every completed persona still without a current analysis (in parallel,
    one per analysis process); errors here propagate, so the review reports the check as unfinished."""
    if lane is not None:
        lane.wait()
    with ctx.db.session() as session:
        ids = q.completed_persona_ids(session, ctx.task_pk)
    def one(result_id: int) -> bool:
        ctx.checkpoint()
        return analyze_persona(ctx, result_id)

    with ThreadPoolExecutor(_processes(ctx), thread_name_prefix=f"identity-catch-up-{ctx.task_id}") as pool:
        futures = [pool.submit(one, result_id) for result_id in ids]
        try:
            done = sum(bool(f.result()) for f in futures)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    if done:
        ctx.log.info("identity: caught up %d persona(s)", done)
    return done
