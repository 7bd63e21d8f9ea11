"""The identity check inside a real task: background analysis, catch-up, flags, gallery filters and exports."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import db.queries as q
from db.models import GenerationResult, PersonaStatus, utcnow
from db.session import Database
from pipeline.core import identity as core_identity
from pipeline.outputs import browse as gallery
from pipeline.outputs.exports import export_task
from pipeline.providers.registry import ProviderCache, Providers
from pipeline.stages.context import TaskContext
from pipeline.stages.review.identity_lane import catch_up, is_current
from pipeline.submit.settings import set_setting_value
from tests.factories import local_storage, make_settings, make_user, results_of, run_worker, submit, task_row
from tests.fakes.faces import FacesImageProvider, astronaut, jpeg

pytest.importorskip("dlib")


class _FaceProviders(ProviderCache):
    def __init__(self, settings: Any, faceless: int = 0):
        super().__init__(settings)
        self.image = FacesImageProvider(faceless)

    def for_names(self, persona: str, image: str) -> Providers:
        base = super().for_names(persona, image)
        return Providers(base.persona, base.prompt, self.image)


def _run(database: Database, db_url: str, tmp_path: Path, *, count: int = 3, faceless: int = 1,
         toggles: dict[str, bool] | None = None, **settings_overrides: Any) -> tuple[str, Any]:
    settings = make_settings(db_url, tmp_path, **settings_overrides)
    user = make_user(database)
    set_setting_value(database, core_identity.IDENTITY_SETTING_KEY, "on", actor=None)
    task_id = submit(database, settings, user, count=count, images=4, toggles=toggles)
    run_worker(database, local_storage(tmp_path), settings, providers=_FaceProviders(settings, faceless))
    return task_id, user


def test_a_task_measures_identity_on_every_image(database: Database, db_url: str, tmp_path: Path) -> None:
    task_id, user = _run(database, db_url, tmp_path)
    task = task_row(database, task_id)
    assert task.status == "completed"
    assert task.config_snapshot["identity"]["enabled"] is True
    rows = results_of(database, task_id)
    assert all(r.status == PersonaStatus.COMPLETED.value for r in rows)
    for row in rows:
        record = row.image_meta["identity"]
        assert record["base"]["faces"] == 1 and len(record["base"]["embedding"]) == 128
        assert record["base_key"] == row.base_image_url
        assert len(record["images"]) == 4
        summary = row.quality["identity"]
        assert summary["base_faces"] == 1
    faceless = [r for r in rows if core_identity.FLAG_GRID_FACES in (r.quality_flags or [])]
    assert len(faceless) == 1  # exactly the persona whose grid had a quadrant without a face
    assert faceless[0].quality["identity"]["faces"] == [1, 1, 1, 0]
    assert faceless[0].quality["identity"]["score"] == 0.75
    for row in rows:
        if row is not faceless[0]:
            summary = row.quality["identity"]
            assert summary["score"] == 1.0 and summary["worst"] < 0.6, summary
    # Every persona got the same real face: the task's "different people" share it.
    assert all(core_identity.FLAG_DUPLICATE in (r.quality_flags or []) for r in rows)
    task_summary = task.quality_summary["identity"]
    assert task_summary["personas_analysed"] == 3 and task_summary["personas_not_analysed"] == 0
    assert task_summary["duplicate_pairs"] == 3
    assert sum(task_summary["histogram"]["counts"]) == task_summary["variations_measured"] == 11
    # The gallery filters by the identity flags like any other quality flag.
    flt = gallery.GalleryFilter(task_ids=[task_id], flags=[core_identity.FLAG_GRID_FACES])
    page = gallery.query_page(database, user, flt)
    assert [r["id"] for r in page.rows] == [faceless[0].id]


def test_exports_carry_the_scores_and_the_thresholds(database: Database, db_url: str, tmp_path: Path) -> None:
    task_id, user = _run(database, db_url, tmp_path, count=2, faceless=0)
    storage = local_storage(tmp_path)
    out = export_task(database, storage, task_id, "csv", tmp_path / "out.csv", user)
    rows = list(csv.DictReader(io.StringIO(out.read_text("utf-8-sig"))))
    assert {r["identity_score"] for r in rows} == {"1.0"}
    assert all(0 <= float(r["identity_worst_distance"]) < 0.6 and r["base_faces"] == "1" for r in rows)
    assert all("duplicate_identity" in json.loads(r["quality_flags"]) for r in rows)
    out = export_task(database, storage, task_id, "hf", tmp_path / "out.zip", user)
    with zipfile.ZipFile(out) as z:
        lines = [json.loads(x) for x in z.read("train/metadata.jsonl").decode().splitlines()]
        card = z.read("README.md").decode()
    variations = [x for x in lines if x["image_role"] == "variation"]
    assert len(variations) == 8 and all(x["image_faces"] == 1 and x["image_face_distance"] < 0.6 for x in variations)
    assert '"same_person": 0.6' in card
    out = export_task(database, storage, task_id, "zip", tmp_path / "out-zip.zip", user)
    with zipfile.ZipFile(out) as z:
        manifest = json.loads(z.read("manifest.json"))
    assert manifest["tasks"][0]["identity_check"]["thresholds"] == core_identity.Thresholds().as_dict()


def test_library_face_leakage_is_flagged(database: Database, db_url: str, tmp_path: Path) -> None:
    faces = tmp_path / "faces"
    for folder in ("male", "female"):
        (faces / folder).mkdir(parents=True)
        (faces / folder / "face.jpg").write_bytes(jpeg(astronaut()))
    task_id, _ = _run(database, db_url, tmp_path, count=2, faceless=0, faces_url=f"file://{faces}",
                      toggles={"randomize_face_base": True})
    for row in results_of(database, task_id):
        assert row.image_meta["identity"]["face_reference"].endswith("face.jpg")
        assert core_identity.FLAG_LEAKAGE in row.quality_flags
        assert row.quality["identity"]["leakage_distance"] < 0.2


def test_missing_analyses_are_caught_up_on_resume(database: Database, db_url: str, tmp_path: Path) -> None:
    """An analysis lost with a crashed worker is recomputed from the stored images before the review."""
    task_id, _ = _run(database, db_url, tmp_path, count=2, faceless=0)
    with database.transaction() as session:
        for row in session.scalars(sa.select(GenerationResult)):
            row.image_meta = {k: v for k, v in row.image_meta.items() if k != "identity"}
        task = q.get_task(session, task_id)
        assert task is not None
        task.worker_id, task.lease_expires_at = "resumer", utcnow() + timedelta(minutes=5)  # as if it claimed it
    settings = make_settings(db_url, tmp_path)
    ctx = TaskContext.from_task(task_row(database, task_id), db=database, storage=local_storage(tmp_path),
                                settings=settings, providers=_FaceProviders(settings).for_names("offline", "offline"),
                                worker_id="resumer")
    assert catch_up(ctx, None) == 2
    assert all(is_current(r) for r in results_of(database, task_id))
    assert catch_up(ctx, None) == 0  # current analyses are not redone


def test_auto_mode_leaves_the_offline_renderer_alone(database: Database, db_url: str, tmp_path: Path) -> None:
    settings = make_settings(db_url, tmp_path)
    user = make_user(database)
    task_id = submit(database, settings, user, count=2, images=4)
    assert task_row(database, task_id).config_snapshot["identity"] == core_identity.snapshot("auto", "offline")
    run_worker(database, local_storage(tmp_path), settings)
    rows = results_of(database, task_id)
    assert all("identity" not in (r.image_meta or {}) for r in rows)
    assert "identity" not in (task_row(database, task_id).quality_summary or {})


def test_the_setting_rejects_unknown_modes(database: Database) -> None:
    from pipeline.core.errors import ValidationError
    from pipeline.submit.settings import get_setting_value

    with pytest.raises(ValidationError, match="identity_check must be one of auto, on, off"):
        set_setting_value(database, core_identity.IDENTITY_SETTING_KEY, "sometimes", actor=None)
    assert get_setting_value(database, core_identity.IDENTITY_SETTING_KEY) == "auto"
    set_setting_value(database, core_identity.IDENTITY_SETTING_KEY, "OFF", actor=None)
    assert get_setting_value(database, core_identity.IDENTITY_SETTING_KEY) == "off"
