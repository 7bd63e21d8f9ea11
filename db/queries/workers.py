"""Queries on ``workers``: the registry of running executors, and each one's fair share of the waiting tasks."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from db.models import WorkerProcess
from db.queries.settings import read_max_concurrent_tasks
from db.queries.tasks import count_waiting_tasks, held_tasks_by_worker

__all__ = ["fair_share", "forget_worker", "live_workers", "register_worker"]

FORGOTTEN_AFTER = timedelta(days=1)  # a row not seen for this long (a killed worker) is deleted


def register_worker(session: Session, *, worker_id: str, hostname: str, pid: int, slots: int, now: datetime) -> None:
    """Insert or refresh this worker's row (at start and at every heartbeat); drop rows long unseen."""
    row = session.get(WorkerProcess, worker_id)
    if row is None:
        session.add(WorkerProcess(worker_id=worker_id, hostname=hostname[:255], pid=pid, slots=slots,
                                  started_at=now, seen_at=now))
        session.execute(sa.delete(WorkerProcess).where(WorkerProcess.seen_at < now - FORGOTTEN_AFTER))
    else:
        row.slots, row.seen_at = slots, now


def forget_worker(session: Session, worker_id: str) -> None:
    session.execute(sa.delete(WorkerProcess).where(WorkerProcess.worker_id == worker_id))


def live_workers(session: Session, *, seen_after: datetime) -> list[WorkerProcess]:
    return list(session.scalars(
        sa.select(WorkerProcess).where(WorkerProcess.seen_at > seen_after).order_by(WorkerProcess.started_at)
    ))


def fair_share(session: Session, *, worker_id: str, free: int, now: datetime, seen_after: datetime) -> int:
    """How many waiting tasks this worker should claim now, with ``free`` places of its own.

    What can start (the waiting tasks, at most the cap's free places) is shared in proportion to the live
    workers' free places (a worker's slots less the tasks it holds with a live lease): with three idle workers
    of four places and four tasks under a cap of four, the first to poll takes two and leaves one to each of
    the others, which claim it at their next poll, instead of running all four in one process beside two idle
    ones. Never less than one while anything can start (a live worker that does not claim its share delays
    nothing for long), and all of it for a worker alone.

    The answer is an upper bound for the claim, which checks the cap and what waits itself (``claim_next_task``),
    so with one free place, or no other live worker, nothing needs reading."""
    if free <= 1:
        return max(0, free)
    others = [w for w in live_workers(session, seen_after=seen_after) if w.worker_id != worker_id]
    if not others:
        return free
    held = held_tasks_by_worker(session, now)
    startable = min(count_waiting_tasks(session, now), read_max_concurrent_tasks(session) - sum(held.values()))
    if startable <= 0:
        return 0
    free_elsewhere = sum(max(0, w.slots - held.get(w.worker_id, 0)) for w in others)
    return min(free, max(1, math.ceil(startable * free / (free + free_elsewhere))))
