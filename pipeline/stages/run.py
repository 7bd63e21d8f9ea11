"""One claimed task from start to final status: the data stage and the image stage (overlapping: a persona's
images start once its batch is stored), the review and finalize, and what happens when a task is cancelled,
loses its lease, is stopped or fails."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy.exc import DBAPIError

import db.queries as q
from db.models import TaskStatus, utcnow
from db.session import Database
from pipeline.core.errors import LeaseLost, PipelineError, TaskCancelled
from pipeline.stages.context import TaskContext, WorkerStopping
from pipeline.stages.data import run_data_stage
from pipeline.stages.handoff import Handoff, StageAborted
from pipeline.stages.images.stage import run_image_stage
from pipeline.stages.review.task_review import Review, ReviewLanes

logger = logging.getLogger(__name__)


def run_task(ctx: TaskContext) -> str:
    """Run (or resume) a claimed task to a final status; returns it ('released' when handed back)."""
    lanes = ReviewLanes(ctx)
    try:
        lanes.start()
        run_stages(ctx, on_persona_done=lanes.persona_done)
        return finalize(ctx, run_review(ctx, lanes))
    except TaskCancelled:
        with ctx.guarded() as (session, task):
            q.finish_task(session, task, status=TaskStatus.CANCELLED.value, errors=["cancelled by a user"])
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
            q.finish_task(session, task, status=TaskStatus.FAILED.value, errors=[str(exc)])
        return TaskStatus.FAILED.value
    except Exception as exc:  # a bug must not leave the task looking alive: record it and fail visibly
        ctx.log.exception("internal error")
        with contextlib.suppress(LeaseLost), ctx.guarded() as (session, task):
            message = f"internal error: {type(exc).__name__}: {str(exc)[:300]}"
            q.finish_task(session, task, status=TaskStatus.FAILED.value, errors=[message])
        return TaskStatus.FAILED.value
    finally:
        lanes.close()


def run_stages(ctx: TaskContext, on_persona_done: Callable[[int], None]) -> None:
    """The data stage and the image stage at once: the image stage (on a thread of its own) starts on each batch's
    personas when the data stage has stored it. When either fails, the other stops at its next checkpoint, and the
    error that stopped the first is raised."""
    handoff = Handoff()
    with ThreadPoolExecutor(1, thread_name_prefix=f"images-{ctx.task_id}") as pool:
        images = pool.submit(run_image_stage, ctx, handoff, on_persona_done)
        try:
            run_data_stage(ctx, handoff)
        except BaseException as data_error:
            handoff.abort()
            try:
                images.result()
            except BaseException as image_error:
                if isinstance(data_error, StageAborted):
                    raise image_error from None  # the image stage failed first: its error is the task's
            raise
        finally:
            handoff.data_done()
        images.result()


def fail_unstartable(db: Database, task_pk: int, worker_id: str, reason: str) -> None:
    """Fail a claimed task that cannot start in this process (its providers do not load), with the reason: released,
    it would only be claimed again, the oldest waiting task, and hold up the queue."""
    try:
        with db.transaction(immediate=True) as session:
            task = q.assert_lease(session, task_pk, worker_id, utcnow())
            if task is not None:
                q.finish_task(session, task, status=TaskStatus.FAILED.value,
                              errors=[reason])
    except Exception:  # the lease expires and the next claim tries (and reports) again
        logger.exception("cannot record that task %s cannot start", task_pk)


def run_review(ctx: TaskContext, lanes: ReviewLanes) -> Review | None:
    """The identity check's catch-up, quality checks and the targets report (``finalize`` stores them); a failure
    here is reported, never fatal to the dataset."""
    ctx.checkpoint()
    try:
        lanes.catch_up()
    except (LeaseLost, TaskCancelled, WorkerStopping, DBAPIError):
        raise
    except Exception as exc:
        ctx.log.exception("identity check failed")
        ctx.note(f"identity check could not finish: {type(exc).__name__}: {str(exc)[:200]}")
    try:
        return lanes.review()
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
        elif progress.personas_done == 0 and ctx.usage.stopped is None:  # a budget stop did what it allowed: partial
            status = TaskStatus.FAILED.value
        else:
            status = TaskStatus.PARTIAL.value
        q.finish_task(session, task, status=status, errors=failures)
    ctx.log.info(
        "finished %s: %d/%d personas, %d images, %d failed",
        status, progress.personas_done, ctx.count, progress.images_done, progress.personas_failed,
    )
    return status
