"""The image stage: each pending persona's base selfie (or a library face edited into it), then blocks of 4
variations, several personas in parallel; a persona whose provider calls ran out of retries is resumed a few
times before it is marked failed.

Resumable: a stored base is reused (never regenerated) and finished blocks are kept. Objects are written
under deterministic keys before their row is committed, so a retried block overwrites the same keys instead
of leaving orphans.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
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
from pipeline.core.images import image_size
from pipeline.core.keys import base_image_key, content_type_for, extension_for, thumbnail_key, variation_key
from pipeline.providers.prompts import base_selfie_prompt, face_edit_prompt
from pipeline.stages.context import TaskContext, WorkerStopping
from pipeline.stages.images.imaging import ProcessedImage, process_grid
from pipeline.storage import read_image
from pipeline.storage.faces import FaceLibrary

GRID_ATTEMPTS = 3  # a grid that is not 2x2 is asked for again, with another seed
FACE_ATTEMPTS = 3  # up to 3 different library faces when the provider refuses one


def run_image_stage(ctx: TaskContext, on_persona_done: Callable[[int], None] | None = None) -> None:
    """Make each pending persona's base and variations, several personas in parallel; ``on_persona_done`` is
    called with each persona that completes (the review's lanes start on it)."""
    with ctx.guarded() as (session, task):  # the data stage's end and this stage's start: one transaction
        pending = q.pending_persona_ids(session, ctx.task_pk)
        status = TaskStatus.GENERATING_IMAGES if pending else TaskStatus.DATA_GENERATED
        q.set_task_status(session, task, status.value)
    if not pending:
        return
    ctx.log.info("image stage: %d personas", len(pending))
    on_persona_done = on_persona_done or (lambda _result_id: None)
    # Twice the calls in flight: a persona between two calls (storing its base, processing its grid) does not
    # hold one of the task's call slots (``TaskContext.provider_call``).
    threads = max(1, min(2 * ctx.settings.persona_threads, len(pending)))
    with ThreadPoolExecutor(threads, thread_name_prefix=f"img-{ctx.task_id}") as pool:
        futures = [pool.submit(_persona_unit, ctx, result_id, on_persona_done) for result_id in pending]
        try:
            for future in futures:
                future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise


PERSONA_ATTEMPTS = 3  # a persona whose provider calls ran out of retries is resumed up to this many times
PERSONA_RETRY_PAUSE_SECONDS = 2.0


def _persona_unit(ctx: TaskContext, result_id: int, on_done: Callable[[int], None]) -> None:
    ctx.checkpoint()
    try:
        for attempt in range(1, PERSONA_ATTEMPTS + 1):
            try:
                make_persona_images(ctx, result_id)  # resumes: the stored base and finished blocks are kept
                on_done(result_id)
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


def _draft(row: GenerationResult) -> PersonaDraft:
    return PersonaDraft(**{name: getattr(row, name) for name in PERSONA_FIELDS})


def make_persona_images(ctx: TaskContext, result_id: int) -> None:
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

    if base_uri:
        base = read_image(ctx.storage, base_uri)  # resume: reuse the stored base, never regenerate it
    else:
        ctx.checkpoint()
        base, meta = _make_base(ctx, persona, persona_key, append)
        key = base_image_key(ctx.task_id, batch, slot, extension_for(base))
        uri = ctx.storage.put(key, base, content_type_for(key))
        meta["key"] = uri
        with ctx.guarded() as (session, _task):
            row = q.get_result(session, result_id)
            if row is not None:
                q.set_base_image(session, row, uri, meta)

    for block in range(done_blocks, n_blocks):
        ctx.checkpoint()
        prompt, processed, retries = _make_block(ctx, persona, persona_key, base, block, history, append)
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
                return
            q.append_images(session, row, uris, metas, {"block": block, "prompt": prompt, "retries": retries})
            if row.image_count >= ctx.images_per_persona:
                # The last block and the completion in one transaction: a crash before it commits leaves the
                # persona pending with its earlier blocks, and a resume redoes only this block.
                q.mark_persona(session, row, PersonaStatus.COMPLETED.value)
                return
        history.append(prompt)

    with ctx.guarded() as (session, _task):  # nothing left to make (resumed after the last block committed)
        row = q.get_result(session, result_id)
        if row is not None and row.image_count >= ctx.images_per_persona:
            q.mark_persona(session, row, PersonaStatus.COMPLETED.value)


def _make_base(ctx: TaskContext, persona: PersonaDraft, persona_key: str, append: str) -> tuple[bytes, dict[str, Any]]:
    seed = derive_seed(ctx.seed, persona_key, "base")
    if not ctx.toggle("randomize_face_base"):
        prompt = base_selfie_prompt(persona, append)
        try:
            with ctx.provider_call():
                data = ctx.providers.image.generate_base(persona, prompt, seed=seed)
        except RefusalError:
            # The bio text is the usual trigger of a moderation refusal: ask once more without it.
            ctx.log.info("base selfie refused; retrying without the bio text")
            prompt = base_selfie_prompt(persona, append, include_bio=False)
            with ctx.provider_call():
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
            with ctx.provider_call():
                data = ctx.providers.image.edit_face(reference, persona, prompt, seed=seed)
        except RefusalError as exc:  # moderation refused this face: try another one
            last = exc
            ctx.log.info("face reference refused; trying another (%d tried)", len(tried))
            continue
        return data, _base_meta(data, prompt, ref)
    assert last is not None
    raise last


def _base_meta(data: bytes, prompt: str, face_ref: str | None) -> dict[str, Any]:
    width, height = image_size(data)
    return {
        "width": width,
        "height": height,
        "format": extension_for(data).upper().replace("JPG", "JPEG"),
        "bytes": len(data),
        "prompt": prompt,
        "face_reference": face_ref,
    }


def _make_block(
    ctx: TaskContext, persona: PersonaDraft, persona_key: str, base: bytes, block: int, history: list[str], append: str
) -> tuple[str, list[ProcessedImage], int]:
    """Ask for a grid prompt, edit the stored base into a 2x2 grid, split and post-process it.

    Returns the prompt, the four processed images and how many grids were rejected before this one. A grid
    that is not 2x2 is asked for again; a refused one is asked for with a new prompt (another idea).
    """

    def new_prompt(attempt: int) -> str:
        seed = derive_seed(ctx.seed, persona_key, "prompt", block, *((attempt,) if attempt else ()))
        with ctx.provider_call():
            text = ctx.providers.prompt.grid_prompt(persona, history, seed=seed)
        return f"{text} {append}" if append and append not in text else text

    prompt = new_prompt(0)
    last: ImageCheckError | RefusalError | None = None
    for attempt in range(GRID_ATTEMPTS):
        ctx.checkpoint()
        try:
            with ctx.provider_call():
                grid = ctx.providers.image.make_grid(
                    base, prompt, seed=derive_seed(ctx.seed, persona_key, "grid", block, attempt)
                )
        except RefusalError as exc:
            last = exc
            ctx.log.warning("grid %d of %s refused (attempt %d); asking for another idea", block, persona_key,
                            attempt + 1)
            prompt = new_prompt(attempt + 1)
            continue
        try:
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
