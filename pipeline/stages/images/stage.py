"""The image stage: each pending persona's base selfie (or a library face edited into it), then its blocks of 4
variations: the grid prompts one after another (each avoids the ideas before it), each block's grid asked for as
soon as its prompt is there, so a persona's grids run in parallel. Many personas run at once; their calls wait for
the providers' limits (``TaskContext.provider_call``), not for each other. A persona whose provider calls ran out of
retries is resumed a few times before it is marked failed.

It overlaps the data stage: personas are started as their batches are committed (``Handoff``), read from the
database as pending, so a resume starts from what is committed.

Resumable: a stored base is reused (never regenerated) and finished blocks are kept. Blocks are committed in
order (a block finished early waits in memory for the ones before it), so a persona's first ``image_count / 4``
blocks are its done ones. Objects are written under new keys just before their row is committed (never over a
recorded image); what a run wrote but never recorded is removed when the persona is next worked on (``sweep``).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Executor, Future, ThreadPoolExecutor, wait
from typing import Any

from sqlalchemy.exc import DBAPIError

import db.queries as q
from db.models import GenerationResult, PersonaStatus, TaskStatus
from pipeline.core.domain import IMAGES_PER_BLOCK, PERSONA_FIELDS, ImageMeta, PersonaDraft, derive_seed
from pipeline.core.errors import (
    ConfigError,
    ImageCheckError,
    LeaseLost,
    PipelineError,
    ProviderError,
    RefusalError,
    TaskCancelled,
)
from pipeline.core.images import check_image
from pipeline.core.keys import base_image_key, content_type_for, extension_for, thumbnail_key, variation_key
from pipeline.providers.prompts import base_selfie_prompt, face_edit_prompt
from pipeline.stages.context import TaskContext, WorkerStopping
from pipeline.stages.handoff import Handoff, StageAborted
from pipeline.stages.images.imaging import ProcessedImage, cpu_slot, process_grid
from pipeline.stages.images.sweep import sweep_unreferenced
from pipeline.storage import read_image
from pipeline.storage.faces import FaceLibrary

GRID_ATTEMPTS = 3  # a grid that is not 2x2 is asked for again, with another seed
FACE_ATTEMPTS = 3  # up to 3 different library faces when the provider refuses one
# The driver looks for newly stored personas when the data stage says it stored some, and at least this often
# (so a cancel or a lost lease is noticed while nothing is stored).
POLL_SECONDS = 1.0
_STOPS = (LeaseLost, TaskCancelled, WorkerStopping, StageAborted, DBAPIError)  # the task stops, not a persona


def run_image_stage(
    ctx: TaskContext, handoff: Handoff | None = None, on_persona_done: Callable[[int], None] | None = None
) -> None:
    """Make each pending persona's base and variations, many personas at once, starting on the personas the data
    stage stores while it runs (``handoff``; without one, the data stage is over). ``on_persona_done`` is called
    with each persona that completes (the review's lanes start on it)."""
    if handoff is None:
        handoff = Handoff()
        handoff.data_done()
    on_persona_done = on_persona_done or (lambda _result_id: None)
    n_blocks = max(1, ctx.images_per_persona // IMAGES_PER_BLOCK)
    personas_at_once = max(1, int(ctx.settings.personas_in_flight))
    started: set[int] = set()
    running: set[Future[None]] = set()
    # Threads wait on HTTP most of the time: one per persona under way and one per grid of each (the CPU work in
    # them is bounded separately, ``cpu_slot``). The personas' pool is shut down first (the inner ``with``): a
    # persona still under way when the stage stops may yet hand a grid to the grids' pool.
    with ThreadPoolExecutor(personas_at_once * n_blocks, thread_name_prefix=f"grid-{ctx.task_id}") as grids, \
            ThreadPoolExecutor(personas_at_once, thread_name_prefix=f"img-{ctx.task_id}") as personas:
        try:
            seen, status_written = -1, False
            while True:
                seen, data_done = handoff.wait(seen, POLL_SECONDS)
                handoff.check(ctx)
                for future in [f for f in running if f.done()]:
                    running.discard(future)
                    future.result()  # raises what stops the task (a persona's own failure is recorded on it)
                if len(running) >= personas_at_once:
                    continue  # a persona's end wakes the wait
                pending = _pending(ctx, write_status=data_done and not status_written)
                status_written = status_written or data_done
                for result_id in pending:
                    if result_id not in started and len(running) < personas_at_once:
                        started.add(result_id)
                        future = personas.submit(_persona_unit, ctx, result_id, grids, handoff, on_persona_done)
                        future.add_done_callback(lambda _f: handoff.wake())
                        running.add(future)
                if data_done and started.issuperset(pending):
                    break
            while running:
                finished, running = wait(running, return_when=FIRST_EXCEPTION)
                for future in finished:
                    future.result()
        except BaseException:
            handoff.abort()  # the data stage stops too; the personas under way stop at their next call
            for future in running:
                future.cancel()
            raise


def _pending(ctx: TaskContext, *, write_status: bool) -> list[int]:
    """The task's stored pending personas; ``write_status`` (the data stage has ended): and the task's status
    says so (``generating-images``, or ``data-generated`` when no persona is left to make), in one transaction."""
    if not write_status:
        with ctx.db.session() as session:
            return q.pending_persona_ids(session, ctx.task_pk)
    with ctx.guarded() as (session, task):
        pending = q.pending_persona_ids(session, ctx.task_pk)
        status = TaskStatus.GENERATING_IMAGES if pending else TaskStatus.DATA_GENERATED
        if task.status != status.value:
            q.set_task_status(session, task, status.value)
    return pending


PERSONA_ATTEMPTS = 3  # a persona whose provider calls ran out of retries is resumed up to this many times
PERSONA_RETRY_PAUSE_SECONDS = 2.0


def _persona_unit(
    ctx: TaskContext, result_id: int, grids: Executor, handoff: Handoff, on_done: Callable[[int], None]
) -> None:
    handoff.check(ctx)
    try:
        for attempt in range(1, PERSONA_ATTEMPTS + 1):
            try:
                # resumes: the stored base and finished blocks are kept
                make_persona_images(ctx, result_id, grids, handoff)
                on_done(result_id)
                return
            except ProviderError as exc:
                if not exc.retryable or attempt == PERSONA_ATTEMPTS:
                    raise
                ctx.log.warning("persona %d: %s; resuming it (attempt %d of %d)", result_id, exc, attempt + 1,
                                PERSONA_ATTEMPTS)
                ctx.sleep(PERSONA_RETRY_PAUSE_SECONDS * attempt)
    except _STOPS:
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


def _draft(row: GenerationResult) -> PersonaDraft:
    return PersonaDraft(**{name: getattr(row, name) for name in PERSONA_FIELDS})


def make_persona_images(ctx: TaskContext, result_id: int, grids: Executor, handoff: Handoff) -> None:
    """One persona's base (unless stored) and its missing blocks. The grid prompts are asked for one after
    another (each avoids the ideas before it); each block's grid goes out on ``grids`` as soon as its prompt is
    there, and the blocks are committed in order."""
    with ctx.db.session() as session:
        row = q.get_result(session, result_id)
        if row is None or row.status != PersonaStatus.PENDING.value:
            return
        persona = _draft(row)
        batch, slot = row.batch_number, int(row.slot or 0)
        base_uri = row.base_image_url
        done_blocks = int(row.image_count or 0) // IMAGES_PER_BLOCK
        history = [b.get("prompt", "") for b in (row.image_meta or {}).get("blocks", [])]
    persona_key = f"b{batch}-s{slot}"
    append = str(ctx.snapshot.get("base_prompt_append") or "")
    n_blocks = ctx.images_per_persona // IMAGES_PER_BLOCK
    sweep_unreferenced(ctx, result_id, batch, slot)  # what an earlier run wrote but never recorded

    if base_uri:
        base = read_image(ctx.storage, base_uri)  # resume: reuse the stored base, never regenerate it
    else:
        handoff.check(ctx)
        base, meta = _make_base(ctx, persona, persona_key, append)
        key = base_image_key(ctx.task_id, batch, slot, extension_for(base))
        uri = ctx.storage.put(key, base, content_type_for(key))
        meta["key"] = uri
        with ctx.guarded() as (session, _task):
            row = q.get_result(session, result_id)
            if row is not None:
                q.set_base_image(session, row, uri, meta)

    blocks: list[Future[tuple[str, list[ProcessedImage], int]]] = []
    try:
        for block in range(done_blocks, n_blocks):
            handoff.check(ctx)
            prompt = _grid_prompt(ctx, persona, persona_key, block, 0, history, append)
            blocks.append(grids.submit(_make_block, ctx, persona, persona_key, base, block, prompt, list(history),
                                       append, handoff))
            history.append(prompt)  # the next block's prompt avoids this one's idea
        for block, future in enumerate(blocks, start=done_blocks):
            prompt, processed, retries = future.result()
            if _store_block(ctx, result_id, batch, slot, block, prompt, processed, retries):
                return
    finally:
        for future in blocks:
            future.cancel()
        wait(blocks)  # a grid still out is waited for: nothing of this persona runs once it is over

    with ctx.guarded() as (session, _task):  # nothing left to make (resumed after the last block committed)
        row = q.get_result(session, result_id)
        if row is not None and row.image_count >= ctx.images_per_persona:
            q.mark_persona(session, row, PersonaStatus.COMPLETED.value)


def _store_block(
    ctx: TaskContext, result_id: int, batch: int, slot: int, block: int, prompt: str, processed: list[ProcessedImage],
    retries: int,
) -> bool:
    """Write one block's images and commit them; returns whether that completed the persona (or it is gone)."""
    uris, metas = [], []
    for i, image in enumerate(processed):
        index = block * IMAGES_PER_BLOCK + i
        key = variation_key(ctx.task_id, batch, slot, index)
        uri = ctx.storage.put(key, image.data, "image/jpeg")
        thumb = ctx.storage.put(thumbnail_key(key), image.thumb, "image/jpeg")
        uris.append(uri)
        metas.append(
            ImageMeta(
                key=uri, thumb_key=thumb, width=image.width, height=image.height, format="JPEG",
                bytes=len(image.data), block=block, index=index, style=image.style, phash=f"{image.phash:016x}",
            ).as_dict()
            | {"quality": image.quality}
        )
    with ctx.guarded() as (session, _task):
        row = q.get_result(session, result_id)
        if row is None:
            return True
        q.append_images(session, row, uris, metas, {"block": block, "prompt": prompt, "retries": retries})
        if row.image_count >= ctx.images_per_persona:
            # The last block and the completion in one transaction: a crash before it commits leaves the
            # persona pending with its earlier blocks, and a resume redoes only this block.
            q.mark_persona(session, row, PersonaStatus.COMPLETED.value)
            return True
    return False


def _make_base(ctx: TaskContext, persona: PersonaDraft, persona_key: str, append: str) -> tuple[bytes, dict[str, Any]]:
    seed = derive_seed(ctx.seed, persona_key, "base")
    if not ctx.toggle("randomize_face_base"):
        prompt = base_selfie_prompt(persona, append)
        try:
            with ctx.provider_call("image"):
                data = ctx.providers.image.generate_base(persona, prompt, seed=seed)
        except RefusalError:
            # The bio text is the usual trigger of a moderation refusal: ask once more without it.
            ctx.log.info("base selfie refused; retrying without the bio text")
            prompt = base_selfie_prompt(persona, append, include_bio=False)
            with ctx.provider_call("image"):
                data = ctx.providers.image.generate_base(persona, prompt, seed=seed)
        return data, _base_meta(data, prompt, None)
    library = FaceLibrary.from_settings(ctx.settings)
    if library is None:
        raise ConfigError("randomize_face_base is on but FACES_URL is not set")
    rng = random.Random(seed)
    prompt = face_edit_prompt(persona, append)
    tried: set[str] = set()
    last: ProviderError | None = None
    for _ in range(FACE_ATTEMPTS):
        ref = library.pick(persona.gender, rng, gender_lock=ctx.toggle("randomize_face_gender_lock"), exclude=tried)
        tried.add(ref)
        reference = library.read(ref)
        try:
            with ctx.provider_call("image"):
                data = ctx.providers.image.edit_face(reference, persona, prompt, seed=seed)
        except RefusalError as exc:  # moderation refused this face: try another one
            last = exc
            ctx.log.info("face reference refused; trying another (%d tried)", len(tried))
            continue
        return data, _base_meta(data, prompt, ref)
    assert last is not None
    raise last


def _base_meta(data: bytes, prompt: str, face_ref: str | None) -> dict[str, Any]:
    width, height = check_image(data)  # a provider's image is stored only once it decodes whole within the bounds
    return {
        "width": width,
        "height": height,
        "format": extension_for(data).upper().replace("JPG", "JPEG"),
        "bytes": len(data),
        "prompt": prompt,
        "face_reference": face_ref,
    }


def _grid_prompt(
    ctx: TaskContext, persona: PersonaDraft, persona_key: str, block: int, attempt: int, history: list[str], append: str
) -> str:
    """A grid prompt for ``block`` that avoids the ideas in ``history`` (``attempt``: a refused grid's new idea)."""
    seed = derive_seed(ctx.seed, persona_key, "prompt", block, *((attempt,) if attempt else ()))
    with ctx.provider_call("prompt"):
        text = ctx.providers.prompt.grid_prompt(persona, history, seed=seed)
    return f"{text} {append}" if append and append not in text else text


def _make_block(
    ctx: TaskContext, persona: PersonaDraft, persona_key: str, base: bytes, block: int, prompt: str,
    history: list[str], append: str, handoff: Handoff,
) -> tuple[str, list[ProcessedImage], int]:
    """Edit the stored base into a 2x2 grid for ``prompt``, split and post-process it.

    Returns the prompt used, the four processed images and how many grids were rejected before this one. A grid
    that is not 2x2 is asked for again; a refused one is asked for with a new prompt (another idea, avoiding
    ``history``: the earlier blocks' prompts).
    """
    last: ImageCheckError | RefusalError | None = None
    for attempt in range(GRID_ATTEMPTS):
        handoff.check(ctx)
        try:
            with ctx.provider_call("image"):
                grid = ctx.providers.image.make_grid(
                    base, prompt, seed=derive_seed(ctx.seed, persona_key, "grid", block, attempt)
                )
        except RefusalError as exc:
            last = exc
            ctx.log.warning("grid %d of %s refused (attempt %d); asking for another idea", block, persona_key,
                            attempt + 1)
            prompt = _grid_prompt(ctx, persona, persona_key, block, attempt + 1, history, append)
            continue
        try:
            with cpu_slot():
                processed = process_grid(
                    grid,
                    crop_borders=ctx.toggle("crop_white_borders"),
                    randomize=ctx.toggle("randomize_image_style"),
                    seed=ctx.seed,
                    persona_key=persona_key,
                    first_index=block * IMAGES_PER_BLOCK,
                )
        except ImageCheckError as exc:
            last = exc
            ctx.log.warning("grid %d of %s rejected (attempt %d): %s", block, persona_key, attempt + 1, exc)
            continue
        return prompt, processed, attempt
    assert last is not None
    raise last
