"""How a task paces its provider calls, and the review's head start while the images are made."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import db.queries as q
from db.models import GenerationResult, utcnow
from db.session import Database
from pipeline.providers.registry import ProviderCache, Providers
from pipeline.stages.context import TaskContext
from pipeline.stages.images import stage as image_stage
from pipeline.stages.review import task_review as review
from pipeline.stages.review.task_review import review_task
from tests.factories import local_storage, make_settings, make_user, results_of, run_worker, submit, task_row

CALL_SECONDS = 0.04


class _Meter:
    """The most calls of ``fn`` ever in flight at once (each taking at least ``latency``)."""

    def __init__(self, latency: float = 0.0) -> None:
        self.latency = latency
        self.lock = threading.Lock()
        self.calls = self.max_calls = 0

    def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            self.calls += 1
            self.max_calls = max(self.max_calls, self.calls)
        try:
            time.sleep(self.latency)
            return fn(*args, **kwargs)
        finally:
            with self.lock:
                self.calls -= 1


class _Slow:
    def __init__(self, inner: Any, meter: _Meter):
        self.inner, self.meter = inner, meter

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name in ("generate_base", "edit_face", "make_grid", "grid_prompt"):
            return lambda *a, **k: self.meter.call(attr, *a, **k)
        return attr


class _MeteredProviders(ProviderCache):
    def __init__(self, settings: Any, meter: _Meter):
        super().__init__(settings)
        self.meter = meter

    def for_names(self, persona: str, image: str) -> Providers:
        base = super().for_names(persona, image)
        return Providers(base.persona, _Slow(base.prompt, self.meter), _Slow(base.image, self.meter))


class _SlowGrids(ProviderCache):
    """Offline providers whose grids take ``latency`` (far longer than a grid prompt, as with real providers)."""

    def __init__(self, settings: Any, latency: float):
        super().__init__(settings)
        self.latency = latency

    def for_names(self, persona: str, image: str) -> Providers:
        base = super().for_names(persona, image)
        outer = self

        class Image:
            name = "slow-grids-offline"

            def __getattr__(self, name: str) -> Any:
                return getattr(base.image, name)

            def make_grid(self, image: bytes, prompt: str, *, seed: int) -> bytes:
                time.sleep(outer.latency)
                return base.image.make_grid(image, prompt, seed=seed)

        return Providers(base.persona, base.prompt, Image())


def test_personas_in_flight_bounds_the_personas_under_way(
    database: Database, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``PERSONAS_IN_FLIGHT`` personas of a task are made at once: their calls wait for the providers' limits,
    not for each other."""
    settings = make_settings(db_url, tmp_path, personas_in_flight=6)
    meter = _Meter(CALL_SECONDS)  # the providers' calls
    under_way = _Meter()  # the personas being made
    real = image_stage.make_persona_images
    monkeypatch.setattr(image_stage, "make_persona_images", lambda ctx, rid, *a: under_way.call(real, ctx, rid, *a))
    task_id = submit(database, settings, make_user(database), count=12, images=4)
    run_worker(database, local_storage(tmp_path), settings, providers=_MeteredProviders(settings, meter))
    rows = results_of(database, task_id)
    assert task_row(database, task_id).status == "completed" and all(r.image_count == 4 for r in rows)
    assert under_way.max_calls == 6  # PERSONAS_IN_FLIGHT personas at once, never more


def test_a_personas_grids_run_in_parallel_and_its_blocks_are_stored_in_order(
    database: Database, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A persona's second grid is asked for as soon as its second prompt is there, while the first grid is still
    out (the prompts stay one after another); the blocks are stored in order all the same."""
    blocks: dict[tuple[str, int], tuple[float, float]] = {}
    real = image_stage._make_block

    def timed(ctx: Any, persona: Any, persona_key: str, base: bytes, block: int, *args: Any) -> Any:
        start = time.monotonic()
        try:
            return real(ctx, persona, persona_key, base, block, *args)
        finally:
            blocks[persona_key, block] = (start, time.monotonic())

    monkeypatch.setattr(image_stage, "_make_block", timed)
    settings = make_settings(db_url, tmp_path)
    task_id = submit(database, settings, make_user(database), count=2, images=8)
    run_worker(database, local_storage(tmp_path), settings, providers=_SlowGrids(settings, 0.5))
    assert task_row(database, task_id).status == "completed"
    for row in results_of(database, task_id):
        key = f"b{row.batch_number}-s{row.slot}"
        assert blocks[key, 1][0] < blocks[key, 0][1], f"persona {key}: its second grid waited for the first"
        assert [image["index"] for image in row.image_meta["images"]] == list(range(8))
        assert [block["block"] for block in row.image_meta["blocks"]] == [0, 1]


def test_the_review_uses_the_stored_hashes_and_prefetched_languages_and_equals_a_review_from_scratch(
    database: Database, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each thumbnail's hash is made with the image and stored in ``image_meta``; each persona's language is
    detected on the prefetch thread once its images are complete. The review itself computes neither, and a
    review from scratch (no stored hashes, nothing prefetched: a task made before hashes were stored) stores
    the same flags and summary."""
    threads: dict[str, list[str]] = {"hash": [], "language": []}
    real_hash, real_language = review.image_hash, review.detect_language

    def hash_on(data: bytes) -> int:
        threads["hash"].append(threading.current_thread().name)
        return real_hash(data)

    def language_on(text: str) -> Any:
        threads["language"].append(threading.current_thread().name)
        return real_language(text)

    monkeypatch.setattr(review, "image_hash", hash_on)
    monkeypatch.setattr(review, "detect_language", language_on)
    settings = make_settings(db_url, tmp_path)
    storage = local_storage(tmp_path)
    task_id = submit(database, settings, make_user(database), count=4, images=4, language="English")
    run_worker(database, storage, settings)
    assert threads["hash"] == []  # the review read every hash from image_meta
    assert len(threads["language"]) == 4 and all(name.startswith("review-") for name in threads["language"])
    images = [image for r in results_of(database, task_id) for image in r.image_meta["images"]]
    assert len(images) == 16
    assert all(image["phash"] == f"{real_hash(storage.get(image['thumb_key'])):016x}" for image in images)
    summary = task_row(database, task_id).quality_summary
    stored = {r.id: (r.quality_flags, r.quality) for r in results_of(database, task_id)}

    with database.transaction() as session:  # as if a worker had resumed the task for its review only
        for row in session.scalars(sa.select(GenerationResult)):
            meta = dict(row.image_meta)
            meta["images"] = [{k: v for k, v in image.items() if k != "phash"} for image in meta["images"]]
            row.image_meta, row.quality_flags, row.quality = meta, [], {}
        task = q.get_task(session, task_id)
        assert task is not None
        task.worker_id, task.lease_expires_at = "reviewer", utcnow() + timedelta(minutes=5)
    ctx = TaskContext.from_task(task_row(database, task_id), db=database, storage=storage,
                                settings=settings, providers=ProviderCache(settings).for_names("offline", "offline"),
                                worker_id="reviewer")
    threads["hash"].clear()
    review_task(ctx)
    assert len(threads["hash"]) == 16 and "review-" not in "".join(threads["hash"])  # computed by the review
    assert task_row(database, task_id).quality_summary == summary
    assert {r.id: (r.quality_flags, r.quality) for r in results_of(database, task_id)} == stored
