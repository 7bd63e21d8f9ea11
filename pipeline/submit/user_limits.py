"""Per-user limits set by an administrator (Settings, ``python -m pipeline settings set``): how many unfinished
tasks one user may have, and how many previews one user may ask for in an hour. 0 means no limit (the default).

Each check runs inside the write that it guards, holding the user's row (PostgreSQL ``FOR UPDATE``; SQLite's
``BEGIN IMMEDIATE``), so that two submits at the same moment cannot both pass the last free place.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session

import db.queries as q
from db.models import User, utcnow
from db.session import Database
from pipeline.core.errors import ConflictError

MAX_RUNNING_TASKS_PER_USER_KEY = q.MAX_RUNNING_TASKS_PER_USER_KEY
MAX_PREVIEWS_PER_HOUR_KEY = q.MAX_PREVIEWS_PER_HOUR_KEY
MAX_USER_LIMIT = q.MAX_USER_LIMIT
PREVIEW_ACTION = "preview"  # the audit-log entry each preview writes: the hourly count reads them
PREVIEW_WINDOW = timedelta(hours=1)


def check_task_limit(session: Session, user_id: int) -> None:
    """Refuse a new task when ``user_id`` already has as many unfinished tasks as the limit allows.
    Call it in the transaction that inserts the task."""
    limit = q.read_user_limit(session, q.MAX_RUNNING_TASKS_PER_USER_KEY)
    if not limit:
        return
    q.lock_user(session, user_id)
    unfinished = q.count_unfinished_tasks(session, user_id)
    if unfinished >= limit:
        raise ConflictError(f"you already have {unfinished} unfinished task(s), the most an administrator allows "
                            f"per user ({limit}): wait for one to finish, or cancel one")


def admit_preview(db: Database, user: User) -> None:
    """Count one preview of ``user`` (an audit-log entry), or refuse it when the hourly limit is reached. Without
    a limit nothing is written (a preview stores nothing)."""
    with db.transaction(immediate=True) as session:
        limit = q.read_user_limit(session, q.MAX_PREVIEWS_PER_HOUR_KEY)
        if not limit:
            return
        q.lock_user(session, user.id)
        done = q.count_audit_since(session, user.id, PREVIEW_ACTION, utcnow() - PREVIEW_WINDOW)
        if done >= limit:
            raise ConflictError(f"you have asked for {done} preview(s) in the last hour, the most an "
                                f"administrator allows per user ({limit}): try again later")
        q.add_audit(session, user, PREVIEW_ACTION, user.email, None, None)
