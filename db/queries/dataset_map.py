"""Queries of the dataset map and the diversity figures: the personas of a gallery view with what the map
draws (names, facets, the bios' stored words, the base face's embedding, a thumbnail key), the bios of personas
whose words were not stored yet, storing the review's words, and each task's stored figures."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from db.models import GenerationResult, GenerationTask
from db.queries.gallery.criteria import PersonaCriteria, gender_bucket, joined, visible_tasks, where_clauses

__all__ = ["MAP_BIO_FIELDS", "bio_texts", "map_rows", "set_bio_terms", "set_task_diversity", "task_diversity"]

R = GenerationResult
T = GenerationTask
MAP_BIO_FIELDS: tuple[str, ...] = ("bio_facebook", "bio_instagram", "bio_x", "bio_tiktok", "about")
ID_CHUNK = 5_000  # ids per IN list: well under SQLite's bound on a statement's parameters


def map_rows(session: Session, c: PersonaCriteria, *, limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` personas of the view in generation order: id, task_id, name parts, the facets the map
    colours by (gender bucket, age, ethnicity, language, city, status, curation, favourite, quality flags),
    ``bio_terms`` (the bios' words as the review stored them; None before that, see ``bio_texts``),
    ``thumb_key`` (first variation's thumbnail, else the base image), and ``face`` (the base selfie's
    embedding, or None where the identity check found none or analysed an earlier base)."""
    query = (
        joined(
            sa.select(
                R.id,
                T.task_id.label("task_id"),
                R.firstname,
                R.lastname,
                gender_bucket(R.gender).label("gender"),
                R.age,
                R.ethnicity,
                T.bio_language.label("language"),
                R.current_city,
                R.status,
                R.curation,
                R.favorite,
                R.quality_flags,
                R.bio_terms,
                R.base_image_url,
                R.image_meta[("images", 0, "thumb_key")].as_string().label("thumb_key"),
                R.image_meta[("identity", "base_key")].as_string().label("face_base_key"),
                R.image_meta[("identity", "base", "embedding")].label("face"),
            )
        )
        .where(*where_clauses(session, c))
        .order_by(R.task_id, R.batch_number, R.slot, R.id)
        .limit(limit)
    )
    out = []
    result = session.connection().execute(query)  # Core rows: no ORM loading machinery per row
    keys = list(result.keys())  # once: a row's own mapping builds its key view again for every row
    for row in result.all():  # one fetch of every row, not one call per row
        data = dict(zip(keys, row, strict=True))
        if data.pop("face_base_key") != data["base_image_url"] or not isinstance(data["face"], list):
            data["face"] = None  # the analysis is of an earlier base (or there is none)
        data["thumb_key"] = data["thumb_key"] or data["base_image_url"]
        data["quality_flags"] = list(data["quality_flags"] or [])
        out.append(data)
    return out


def bio_texts(session: Session, ids: Sequence[int]) -> dict[int, str]:
    """The bios and about text of each persona of ``ids`` (the ``MAP_BIO_FIELDS`` that are set, joined by a
    space), by id: what the map counts the words of where the review has not stored them."""
    out: dict[int, str] = {}
    columns = [getattr(R, name) for name in MAP_BIO_FIELDS]
    for start in range(0, len(ids), ID_CHUNK):
        chunk = list(ids[start : start + ID_CHUNK])
        for result_id, *texts in session.execute(sa.select(R.id, *columns).where(R.id.in_(chunk))):
            out[result_id] = " ".join(t for t in texts if t)
    return out


def set_bio_terms(session: Session, terms: dict[int, bytes]) -> None:
    """Store each persona's bio words (``pipeline.core.similarity.bio_terms``), by result id."""
    if terms:
        session.execute(sa.update(R), [{"id": result_id, "bio_terms": value} for result_id, value in terms.items()])


def set_task_diversity(session: Session, task: GenerationTask, figures: dict[str, Any] | None) -> None:
    """Store a task's diversity figures (computed by the review)."""
    task.diversity = figures


def task_diversity(session: Session, viewer_id: int | None, task_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The stored diversity figures of the visible tasks among ``task_ids`` that have them, by task id."""
    if not task_ids:
        return {}
    query = sa.select(T.task_id, T.diversity).where(T.task_id.in_(list(task_ids)), visible_tasks(viewer_id))
    return {task_id: figures for task_id, figures in session.execute(query) if figures}
