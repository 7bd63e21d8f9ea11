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

__all__ = ["MAP_BIO_FIELDS", "bio_texts", "map_columns", "map_thumb_keys", "set_bio_terms", "set_task_diversity", "task_diversity"]

R = GenerationResult
T = GenerationTask
MAP_BIO_FIELDS: tuple[str, ...] = ("bio_facebook", "bio_instagram", "bio_x", "bio_tiktok", "about")
ID_CHUNK = 5_000  # ids per IN list: well under SQLite's bound on a statement's parameters


def map_columns(session: Session, c: PersonaCriteria, *, limit: int) -> dict[str, list[Any]]:
    """Up to ``limit`` personas of the view in generation order, by column (a list per column, a row per
    persona): id, task_id, name parts, the facets the map colours by (gender bucket, age, ethnicity, language,
    city, status, curation, favourite, quality flags), ``bio_terms`` (the bios' words as the review stored them;
    None before that, see ``bio_texts``), and ``face`` (the base selfie's embedding, or None where the identity
    check found none or analysed an earlier base). Columns, not a dictionary per persona: a view of thousands is
    read into a table. Thumbnails are read for the few personas shown with one (``map_thumb_keys``)."""
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
                R.image_meta[("identity", "base_key")].as_string().label("face_base_key"),
                R.image_meta[("identity", "base", "embedding")].label("face"),
            )
        )
        .where(*where_clauses(session, c))
        .order_by(R.task_id, R.batch_number, R.slot, R.id)
        .limit(limit)
    )
    result = session.connection().execute(query)  # Core rows: no ORM loading machinery per row
    keys = list(result.keys())
    rows = result.all()  # one fetch of every row, not one call per row
    columns: dict[str, list[Any]] = {key: [] for key in keys}
    if rows:
        columns = {key: list(values) for key, values in zip(keys, zip(*rows, strict=True), strict=True)}
    base_keys = columns.pop("face_base_key")
    columns["face"] = [  # None where the analysis is of an earlier base (or there is none)
        face if isinstance(face, list) and analysed == base else None
        for face, analysed, base in zip(columns["face"], base_keys, columns["base_image_url"], strict=True)
    ]
    columns["quality_flags"] = [list(flags or []) for flags in columns["quality_flags"]]
    return columns


def map_thumb_keys(session: Session, ids: Sequence[int]) -> dict[int, str | None]:
    """The storage key of each persona's thumbnail (its first variation's, else its base image), by id."""
    query = sa.select(R.id, R.image_meta[("images", 0, "thumb_key")].as_string(), R.base_image_url)
    return {result_id: thumb or base
            for start in range(0, len(ids), ID_CHUNK)
            for result_id, thumb, base in session.execute(query.where(R.id.in_(list(ids[start : start + ID_CHUNK]))))}


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
