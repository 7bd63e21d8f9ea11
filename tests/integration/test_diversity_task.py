"""Diversity figures computed once at review time, stored with the task, carried by the ZIP manifest and the
dataset card; with the identity check, the same-/different-person distance curves too."""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path

import pytest

from db.session import Database
from pipeline.outputs.exports import export_task
from tests.factories import local_storage, make_settings, make_user, results_of, run_worker, submit, task_row


def test_an_offline_task_stores_its_bio_and_name_figures(database: Database, db_url: str, tmp_path: Path) -> None:
    settings = make_settings(db_url, tmp_path)
    task_id = submit(database, settings, make_user(database), count=12, images=4)
    run_worker(database, local_storage(tmp_path), settings)
    task = task_row(database, task_id)
    assert task.status == "completed"
    figures = task.diversity["figures"]
    assert task.diversity["personas"] == 12 and task.diversity["faces"] == 0
    assert figures["unique_names"]["value"] == 1.0  # names are de-duplicated within a task
    assert 1.0 < figures["bio_vendi"]["value"] <= 12.0
    assert 0.0 < figures["bio_distinct_2"]["value"] <= 1.0
    assert "face_vendi" not in figures and "identity" not in task.diversity  # the check did not run

    out = export_task(database, local_storage(tmp_path), task_id, "zip", tmp_path / "out.zip")
    with zipfile.ZipFile(out) as zf:
        manifest = json.loads(zf.read("manifest.json"))
    assert manifest["tasks"][0]["diversity"] == json.loads(json.dumps(task.diversity))
    card_dir = export_task(database, local_storage(tmp_path), task_id, "hf", tmp_path / "hf")
    card = (card_dir / "README.md").read_text(encoding="utf-8")
    assert "Diversity (computed when the task was reviewed)" in card
    assert f"| Vendi score of bios | {figures['bio_vendi']['value']} |" in card


def test_the_identity_check_adds_same_and_different_person_curves(
    database: Database, db_url: str, tmp_path: Path
) -> None:
    pytest.importorskip("dlib")
    from tests.integration.test_identity_task import _run  # the face provider set-up, shared

    task_id, _user = _run(database, db_url, tmp_path, count=3, faceless=0)
    task = task_row(database, task_id)
    identity = task.diversity["identity"]
    faces = [r for r in results_of(database, task_id) if (r.image_meta or {}).get("identity", {}).get("base", {})
             .get("embedding")]
    assert task.diversity["faces"] == len(faces) == 3
    assert identity["different_person"]["pairs"] == math.comb(3, 2)
    assert identity["same_person"]["pairs"] == task.quality_summary["identity"]["variations_measured"]
    assert sum(identity["same_person"]["histogram"]["counts"]) == identity["same_person"]["pairs"]
    assert 0.0 <= identity["equal_error_rate"]["rate"] <= 1.0
    # every persona has the same (astronaut) face: no different-persona pair is above the threshold
    assert identity["different_pairs_above_threshold"]["value"] == 0.0
    assert identity["different_pairs_above_threshold"]["met"] is False
    assert "face_vendi" in task.diversity["figures"]
