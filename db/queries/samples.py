"""The sample photos the New-task page's toggle preview starts from: a user's latest base images."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from db.models import GenerationResult, GenerationTask

__all__ = ["latest_base_images"]


def latest_base_images(session: Session, user_id: int, limit: int = 3) -> list[str]:
    """The stored base images of the user's own tasks, newest persona first (``limit`` of them)."""
    query = (
        sa.select(GenerationResult.base_image_url)
        .join(GenerationTask, GenerationTask.id == GenerationResult.task_id)
        .where(GenerationTask.user_id == user_id, GenerationResult.base_image_url.is_not(None))
        .order_by(GenerationResult.id.desc())
        .limit(limit)
    )
    return [uri for uri in session.scalars(query) if uri]
