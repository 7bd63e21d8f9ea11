"""Queries on ``workers``: the registry of running executors, and each one's fair share of the waiting tasks."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from db.models import GenerationTask, WorkerProcess
from db.queries.tasks import _CAP_VALUE, _WAITING, IN_PROGRESS, _parse_cap

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


def fair_share(
    session: Session, *, worker_id: str, free: int, now: datetime, seen_after: datetime, exclude_host: str | None = None
) -> int:
    """How many waiting tasks this worker should claim now, with ``free`` places of its own.

    What can start (the waiting tasks, at most the cap's free places) is shared in proportion to the live
    workers' free places (a worker's slots less the tasks it holds with a live lease): with three idle workers
    of four places and four tasks under a cap of four, the first to poll takes two and leaves one to each of
    the others, which claim it at their next poll, instead of running all four in one process beside two idle
    ones. Never less than one while anything can start (a live worker that does not claim its share delays
    nothing for long), and all of it for a worker alone. ``exclude_host``: workers on this host do not count
    (a worker whose tasks run in processes of their own gains nothing by leaving a task to another process on the
    same machine, whose cores they share, and the task would start a poll later).

    The answer is an upper bound for the claim, which checks the cap and what waits itself (``claim_next_task``),
    so what cannot change it is not read: one free place, or no other live worker, is the whole answer."""
    if free <= 1:
        return max(0, free)
    others = [w for w in live_workers(session, seen_after=seen_after)
              if w.worker_id != worker_id and w.hostname != exclude_host]
    if not others:
        return free
    waiting = session.execute(sa.select(sa.func.count()).select_from(GenerationTask).where(*_WAITING),
                              {"now": now}).scalar() or 0
    held = dict(session.execute(
        sa.select(GenerationTask.worker_id, sa.func.count())
        .where(GenerationTask.lease_expires_at > now, GenerationTask.status.in_(IN_PROGRESS))
        .group_by(GenerationTask.worker_id)
    ).all())
    cap = session.execute(_CAP_VALUE).scalar()
    startable = min(waiting, _parse_cap(cap) - sum(held.values())) if cap is not None else waiting
    if startable <= 0:
        return 0
    free_elsewhere = sum(max(0, w.slots - held.get(w.worker_id, 0)) for w in others)
    return min(free, max(1, math.ceil(startable * free / (free + free_elsewhere))))
