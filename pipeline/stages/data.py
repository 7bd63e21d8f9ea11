"""The data stage: personas requested in batches of 10, up to 5 in flight, committed in batch order, names
de-duplicated within the task, short batches topped up, and each persona matched to an open demographic slot.

It runs alongside the image stage: after each batch is committed, ``Handoff.stored`` tells the image stage to
start on the new personas."""

from __future__ import annotations

import math
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import db.queries as q
from db.models import TaskStatus
from pipeline.core.domain import (
    BIO_PROMPT_KEYS,
    MAX_BATCHES_IN_FLIGHT,
    PERSONA_BATCH_SIZE,
    PersonaBatch,
    PersonaRequest,
    derive_seed,
)
from pipeline.core.errors import ProviderError
from pipeline.core.personas import name_key
from pipeline.core.targets import allocate_slots, fill_slot
from pipeline.stages.context import TaskContext
from pipeline.stages.handoff import Handoff
from pipeline.stages.limits import ProviderFailing

MAX_EXCLUDED_NAMES = 200  # the newest names a batch request asks the provider not to repeat


def run_data_stage(ctx: TaskContext, handoff: Handoff | None = None) -> None:
    """Request personas in batches of 10, up to 5 in flight, committed in batch order, topped up when short;
    ``handoff`` hears of each committed batch (the image stage starts on its personas)."""
    handoff = handoff or Handoff()
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
    stopped = False  # the task stopped calling the persona provider (early stop, budget): no more requests
    ctx.log.info("data stage: %d personas to generate", remaining)
    with ThreadPoolExecutor(MAX_BATCHES_IN_FLIGHT, thread_name_prefix=f"data-{ctx.task_id}") as pool:
        try:
            while remaining > 0:
                in_flight = sum(n for _, n, _ in window)
                while (len(window) < MAX_BATCHES_IN_FLIGHT and in_flight < remaining
                       and requests_made < max_requests and not stopped):
                    handoff.check(ctx)
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
                    window.append((next_batch, n, pool.submit(_generate, ctx, request)))
                    next_batch += 1
                    requests_made += 1
                    in_flight += n
                if not window:
                    break
                batch_number, _n, future = window.popleft()
                try:
                    batch = future.result()
                except ProviderFailing:  # noted once where it stopped; the batches already out are still stored
                    stopped = True
                    continue
                except ProviderError as exc:
                    ctx.note(f"persona batch {batch_number} failed: {exc}")
                    continue
                handoff.check(ctx)
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
                handoff.stored()
                for stored_persona in fresh[:inserted]:
                    fill_slot(open_slots, stored_persona)
                recent = (recent + [f"{p['firstname']} {p['lastname']}" for p in fresh])[-MAX_EXCLUDED_NAMES:]
        finally:
            for _, _, future in window:
                future.cancel()
    if remaining > 0:
        ctx.note(f"data stage: {remaining} of {ctx.count} personas missing after {requests_made} batch requests")


def _generate(ctx: TaskContext, request: PersonaRequest) -> PersonaBatch:
    with ctx.provider_call("persona"):
        return ctx.providers.persona.generate(request)


def _open_slots(ctx: TaskContext) -> list[dict[str, Any]]:
    """The task's exact demographic slots minus those already filled by stored personas (resume-safe)."""
    slots = allocate_slots(ctx.targets, ctx.count, derive_seed(ctx.seed, "slots"))
    with ctx.db.session() as session:
        for row in q.list_results(session, ctx.task_pk):
            fill_slot(slots, {"gender": row.gender, "ethnicity": row.ethnicity, "age": row.age})
    return slots
