"""The overview (the app's landing page): the whole picture of a user's tasks (an administrator's: everyone's,
with a per-user breakdown) in one read: tasks by status, personas and images made (all time, 7 and 30 days, a
daily series), the tasks running now with their progress, recent failures with their reasons, and the share of
personas each quality check flagged."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import db.queries as q
from db.models import User, utcnow
from db.session import Database
from pipeline.core.domain import TaskStatus
from pipeline.core.usage import usage_table

__all__ = ["DAYS_CHARTED", "Overview", "provider_usage_this_week", "read_overview"]

DAYS_CHARTED = 30
RUNNING_STATUSES = (TaskStatus.PENDING.value, TaskStatus.GENERATING_DATA.value, TaskStatus.DATA_GENERATED.value,
                    TaskStatus.GENERATING_IMAGES.value)
FAILURE_LINES = 3  # the last lines of a failed task's error log shown as its reasons


@dataclass(frozen=True)
class Made:
    personas: int
    images: int


@dataclass(frozen=True)
class Overview:
    """What the overview page shows; ``per_user`` is empty unless an administrator asked."""

    status_counts: dict[str, int]
    made: dict[str, Made]  # "all", "30 days", "7 days"
    daily: list[dict[str, Any]]  # one entry per day of the last DAYS_CHARTED days: day, personas, images
    running: list[q.TaskRow]
    failures: list[dict[str, Any]]
    reviewed: int  # personas of finished tasks
    flagged: int
    flags: dict[str, int]  # flag -> personas it flagged
    per_user: list[dict[str, Any]] = field(default_factory=list)

    @property
    def tasks(self) -> int:
        return sum(self.status_counts.values())

    @property
    def is_running(self) -> bool:
        """Whether a task is waiting or in progress (the page then refreshes itself)."""
        return bool(self.running)


def _viewer(user: User) -> int | None:
    return None if user.is_admin else user.id


def _days(rows: list[tuple[date, int, int]], today: date) -> list[dict[str, Any]]:
    """Every day of the window, zero-filled, oldest first."""
    by_day = {day: (personas, images) for day, personas, images in rows}
    days = [today - timedelta(days=n) for n in range(DAYS_CHARTED - 1, -1, -1)]
    return [{"day": d, "personas": by_day.get(d, (0, 0))[0], "images": by_day.get(d, (0, 0))[1]} for d in days]


def _reasons(error_log: str | None) -> list[str]:
    lines = [line for line in (error_log or "").splitlines() if line.strip()]
    return lines[-FAILURE_LINES:]


def read_overview(db: Database, user: User, now: datetime | None = None) -> Overview:
    """The overview of ``user``'s tasks (an administrator: every task, and ``per_user``)."""
    now = now or utcnow()
    viewer = _viewer(user)
    start = datetime.combine(now.date() - timedelta(days=DAYS_CHARTED - 1), datetime.min.time(), tzinfo=now.tzinfo)
    with db.session() as session:
        counts = q.overview_status_counts(session, viewer)
        made = {
            "all": Made(*q.overview_made_since(session, viewer, None)),
            "30 days": Made(*q.overview_made_since(session, viewer, now - timedelta(days=30))),
            "7 days": Made(*q.overview_made_since(session, viewer, now - timedelta(days=7))),
        }
        daily = _days(q.overview_daily(session, viewer, start), now.date())
        running = q.list_task_rows(session, user_id=viewer, statuses=RUNNING_STATUSES, limit=50)
        failures = q.overview_recent_failures(session, viewer)
        reviewed, flagged, flags = q.overview_flag_counts(session, viewer)
        per_user = q.overview_per_user(session, now - timedelta(days=7)) if user.is_admin else []
    for failure in failures:
        failure["reasons"] = _reasons(failure.pop("error_log"))
    return Overview(counts, made, daily, running, failures, reviewed, flagged, flags, per_user)


def provider_usage_this_week(db: Database, user: User, now: datetime | None = None) -> list[dict[str, Any]]:
    """Calls, images, tokens, seconds and cost per provider over the last 7 days (of ``user``'s tasks; an
    administrator's: everyone's, deleted tasks included), as recorded call by call (``provider_usage``); empty when
    no call was made (the page then says so)."""
    since = (now or utcnow()) - timedelta(days=7)
    with db.session() as session:
        rows = q.usage_since(session, since, _viewer(user))
    return usage_table(rows)
