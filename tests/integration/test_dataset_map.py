"""The dataset map's service (pipeline.outputs.dataset_map): every persona of a view placed by its bio, faces
placed only where the identity check stored them, nearest personas within the task, visibility respected."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import db.queries as q
from db.models import GenerationResult
from db.session import Database
from pipeline.core import similarity as sim
from pipeline.outputs.browse import GalleryFilter
from pipeline.outputs.dataset_map import dataset_map, diversity_of, similar_personas
from tests.factories import local_storage, make_settings, make_user, results_of, run_worker, submit


def test_the_map_places_every_persona_and_finds_neighbours(database: Database, db_url: str, tmp_path: Path) -> None:
    settings = make_settings(db_url, tmp_path)
    owner = make_user(database, "ana@example.org", admin=False)
    other = make_user(database, "bea@example.org", admin=False)
    task_id = submit(database, settings, owner, count=8, images=4)
    run_worker(database, local_storage(tmp_path), settings)
    found = dataset_map(database, owner, GalleryFilter(task_ids=[task_id]))
    assert len(found.points) == 8 and not found.truncated and found.faces == 0
    assert all(p["bio_x"] is not None and p["face_x"] is None for p in found.points)
    assert len({(p["bio_x"], p["bio_y"]) for p in found.points}) > 1  # not all on one spot
    assert len(dataset_map(database, owner, GalleryFilter(task_ids=[task_id]), limit=5).points) == 5

    first = results_of(database, task_id)[0]
    nearest = similar_personas(database, owner, first.id, k=3)
    assert len(nearest["bio"]) == 3 and nearest["face"] == []
    assert first.id not in [n["id"] for n in nearest["bio"]]
    distances = [n["distance"] for n in nearest["bio"]]
    assert distances == sorted(distances)
    assert similar_personas(database, other, first.id) == {"bio": [], "face": []}  # not hers to see
    assert task_id in diversity_of(database, owner, [task_id])
    assert diversity_of(database, other, [task_id]) == {}


def test_the_review_counts_bio_words_once_and_the_map_only_reads_them(
    database: Database, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(db_url, tmp_path)
    owner = make_user(database, "ana@example.org", admin=False)
    task_id = submit(database, settings, owner, count=8, images=4)
    run_worker(database, local_storage(tmp_path), settings)
    rows = results_of(database, task_id)
    for row in rows:  # stored by the review, from the persona's own bios
        bio = " ".join(t for t in (row.bio_facebook, row.bio_instagram, row.bio_x, row.bio_tiktok, row.about) if t)
        assert row.bio_terms == sim.bio_terms(bio) and row.bio_terms
    view = GalleryFilter(task_ids=[task_id])

    def no_bios(*args: Any) -> dict[int, str]:
        raise AssertionError("the map read bios the review had counted")

    with monkeypatch.context() as patched:
        patched.setattr(q, "bio_texts", no_bios)
        stored = dataset_map(database, owner, view)
        nearest = similar_personas(database, owner, rows[0].id, k=3)
    with database.transaction() as session:  # personas reviewed before the words were stored
        session.execute(sa.update(GenerationResult).values(bio_terms=None))
    assert dataset_map(database, owner, view).points == stored.points  # counted as drawn: the same map
    assert similar_personas(database, owner, rows[0].id, k=3) == nearest
