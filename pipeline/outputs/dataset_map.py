"""The dataset map: the personas of a gallery view placed in 2-D by their bios (TF-IDF + truncated SVD, then
the two principal components) and, where the identity check stored them, by their face embeddings; the
personas most similar to one persona; and each task's stored diversity figures.

Computed on the server from one query (``db.queries.map_columns``), nothing downloaded, no model to load. The bios'
words are counted once, by the review (``bio_terms``); a persona reviewed before that has its bios read and
counted as the map is drawn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy.orm import Session

import db.queries as q
from db.models import User
from db.session import Database
from pipeline.core import similarity as sim
from pipeline.outputs.browse import GalleryFilter, resolve_criteria

__all__ = ["COLOURS", "MAP_THUMBNAILS", "MAX_MAP_POINTS", "DatasetMap", "dataset_map", "diversity_of",
           "similar_personas", "view_version"]

MAX_MAP_POINTS = 20_000  # a view larger than this is mapped by its first personas in generation order
MAP_DIMENSIONS = 16  # bio components the map's two axes are drawn from (its picture, not a search: fewer suffice)
MAP_THUMBNAILS = 300  # hover thumbnails travel inside the chart's data: only a map this small carries them
SIMILAR = 5
# facet -> how a point reads it (the map colours by any of them)
COLOURS: dict[str, str] = {
    "gender": "gender",
    "age group": "age_group",
    "ethnicity": "ethnicity",
    "language": "language",
    "city": "current_city",
    "status": "status",
    "curation": "curation",
    "favourite": "favorite",
    "flagged": "flagged",
    "task": "task_id",
}


@dataclass(frozen=True)
class DatasetMap:
    """One row of ``table`` per persona: ``id``, ``name``, ``thumb_uri`` (the thumbnail's storage key, for a map
    of at most ``MAP_THUMBNAILS`` personas; else missing), ``age``, the ``COLOURS`` facets,
    ``bio_x``/``bio_y`` and, for personas with a face embedding, ``face_x``/``face_y`` (else missing).
    ``truncated``: the view had more personas than ``MAX_MAP_POINTS``. A table, not a dict per point: a map of
    thousands of personas is kept in the page's cache and drawn from columns."""

    table: pd.DataFrame
    faces: int
    truncated: bool

    @property
    def points(self) -> list[dict[str, Any]]:
        """The rows as dictionaries, a missing value as None."""
        return list(self.table.astype(object).where(self.table.notna(), None).to_dict("records"))


def _viewer(user: User) -> int | None:
    return None if user.is_admin else user.id


def _bio_terms(session: Session, columns: dict[str, list[Any]]) -> list[bytes]:
    """Each persona's stored bio words; those not stored (a persona not reviewed yet, or from before they were)
    are counted from its bios now."""
    stored = columns["bio_terms"]
    missing = [i for i, terms in zip(columns["id"], stored, strict=True) if not sim.valid_terms(terms)]
    texts = q.bio_texts(session, missing) if missing else {}
    counted = {result_id: sim.bio_terms(text) for result_id, text in texts.items()}
    return [terms if sim.valid_terms(terms) else counted.get(i, b"")
            for i, terms in zip(columns["id"], stored, strict=True)]


def _age_group(age: int | None) -> str:
    if age is None or age != age:  # None, or NaN in a numeric column
        return "unknown"
    start = 13 if age < 20 else int(age) // 10 * 10
    return f"{start}-{19 if start == 13 else start + 9}"


def _or(column: pd.Series, default: str) -> pd.Series:
    """The column's values, ``default`` where one is unset or empty."""
    return column.where(column.notna() & (column != ""), default)


CATEGORIES = ("task_id", "gender", "age_group", "ethnicity", "language", "current_city", "status", "curation",
              "favorite", "flagged")  # few distinct values: stored once each, in the cache and in the chart's data


def _table(columns: dict[str, list[Any]]) -> pd.DataFrame:
    """The map's columns (see ``DatasetMap``) of the query's columns, without the coordinates."""
    raw = pd.DataFrame({key: columns[key] for key in ("firstname", "lastname", "ethnicity", "current_city",
                                                      "curation")}, dtype=object)
    table = pd.DataFrame({
        "id": columns["id"],
        "name": raw["firstname"].astype(str) + " " + raw["lastname"].astype(str),
        "task_id": columns["task_id"],
        "gender": columns["gender"],
        "age": pd.array(columns["age"], dtype="Int64"),
        "age_group": [_age_group(a) for a in columns["age"]],
        "ethnicity": _or(raw["ethnicity"], "unknown"),
        "language": columns["language"],
        "current_city": _or(raw["current_city"], "unknown"),
        "status": columns["status"],
        "curation": _or(raw["curation"], "unset"),
        "favorite": ["yes" if f else "no" for f in columns["favorite"]],
        "flagged": [", ".join(flags) or "none" for flags in columns["quality_flags"]],
    })
    return table.astype({name: "category" for name in CATEGORIES})


def _faces(columns: dict[str, list[Any]]) -> tuple[list[int], np.ndarray]:
    """The positions of the personas with a face embedding (all of one length), and the embeddings."""
    faces = columns["face"]
    with_face = [i for i, face in enumerate(faces) if face]
    if not with_face:
        return [], np.zeros((0, 0))
    size = len(faces[with_face[0]])
    with_face = [i for i in with_face if len(faces[i]) == size]
    return with_face, np.asarray([faces[i] for i in with_face], dtype=np.float64)


def dataset_map(db: Database, user: User, flt: GalleryFilter, limit: int = MAX_MAP_POINTS) -> DatasetMap:
    """The map of the filtered view (at most ``limit`` personas)."""
    criteria = resolve_criteria(db, user, flt)
    with db.session() as session:
        columns = q.map_columns(session, criteria, limit=limit + 1)
        truncated = len(columns["id"]) > limit
        columns = {key: values[:limit] for key, values in columns.items()}
        terms = _bio_terms(session, columns)
        thumbs = q.map_thumb_keys(session, columns["id"]) if len(columns["id"]) <= MAP_THUMBNAILS else {}
    table = _table(columns)
    table.insert(2, "thumb_uri", [thumbs.get(i) for i in columns["id"]])
    table["bio_x"] = table["bio_y"] = table["face_x"] = table["face_y"] = np.nan
    if len(table):
        bio_xy = sim.project_2d(sim.term_vectors(terms, MAP_DIMENSIONS)).round(5)
        table["bio_x"], table["bio_y"] = bio_xy[:, 0], bio_xy[:, 1]
    with_face, faces = _faces(columns)
    if len(with_face) >= 2:
        face_xy = sim.project_2d(faces).round(5)
        table.loc[table.index[with_face], "face_x"] = face_xy[:, 0]
        table.loc[table.index[with_face], "face_y"] = face_xy[:, 1]
    return DatasetMap(table, len(with_face), truncated)


def similar_personas(db: Database, user: User, result_id: int, k: int = SIMILAR) -> dict[str, list[dict[str, Any]]]:
    """The ``k`` personas of the same task nearest to ``result_id`` by bio (cosine distance of their TF-IDF rows)
    and by face (embedding distance; empty without the identity check), each with ``id``, ``name``,
    ``thumb_uri`` and ``distance``. Empty lists when the persona is not visible."""
    with db.session() as session:
        persona = q.gallery_persona(session, _viewer(user), result_id)
        if persona is None:
            return {"bio": [], "face": []}
        criteria = q.PersonaCriteria(viewer_id=_viewer(user), task_ids=(persona["task_id"],))
        columns = q.map_columns(session, criteria, limit=MAX_MAP_POINTS)
        terms = _bio_terms(session, columns)
        if result_id not in columns["id"]:
            return {"bio": [], "face": []}
        index = columns["id"].index(result_id)
        vectors = sim.tfidf_of_counts(sim.term_counts(terms))  # all its words: a few dimensions lose small topics
        by_bio = sim.nearest(vectors, index, k)
        with_face, faces = _faces(columns)
        by_face = []
        if index in with_face:
            own = with_face.index(index)
            by_face = [(with_face[i], d) for i, d in sim.nearest(faces, own, k, metric="euclidean")]
        thumbs = q.map_thumb_keys(session, [columns["id"][i] for i, _ in [*by_bio, *by_face]])

    def entry(i: int, distance: float) -> dict[str, Any]:
        return {"id": columns["id"][i], "name": f"{columns['firstname'][i]} {columns['lastname'][i]}",
                "thumb_uri": thumbs.get(columns["id"][i]), "distance": distance}

    return {"bio": [entry(i, d) for i, d in by_bio], "face": [entry(i, d) for i, d in by_face]}


def diversity_of(db: Database, user: User, task_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The stored diversity figures of the visible tasks among ``task_ids`` (tasks reviewed before the figures
    existed have none)."""
    with db.session() as session:
        return q.task_diversity(session, _viewer(user), task_ids)


def view_version(db: Database, user: User, flt: GalleryFilter) -> str:
    """A text that changes whenever a persona of the view (or one of its tasks) changes: a map drawn for the same
    text is still current."""
    criteria = resolve_criteria(db, user, flt)
    with db.session() as session:
        return q.gallery_view_version(session, criteria)
