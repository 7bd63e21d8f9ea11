"""A user's saved gallery views: a name and the view's URL query parameters."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from db.models import SavedView, utcnow

__all__ = ["delete_saved_view", "list_saved_views", "save_view"]


def list_saved_views(session: Session, user_id: int) -> list[tuple[str, dict[str, str]]]:
    rows = session.execute(sa.select(SavedView.name, SavedView.params).where(SavedView.user_id == user_id)
                           .order_by(SavedView.name))
    return [(str(n), dict(p or {})) for n, p in rows]


def save_view(session: Session, user_id: int, name: str, params: dict[str, str]) -> None:
    existing = session.scalar(sa.select(SavedView).where(SavedView.user_id == user_id, SavedView.name == name))
    if existing is None:
        session.add(SavedView(user_id=user_id, name=name, params=params, created_at=utcnow()))
    else:
        existing.params = params


def delete_saved_view(session: Session, user_id: int, name: str) -> bool:
    result = session.execute(sa.delete(SavedView).where(SavedView.user_id == user_id, SavedView.name == name))
    return bool(getattr(result, "rowcount", 0))
