"""The notebook entry point: ``from pipeline.outputs import open_dataset`` gives a task or a saved view as a
DataFrame with the CSV export's columns, images as paths or bytes on demand, and clear errors."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

import db.queries as q
from db.session import Database
from pipeline.core.errors import NotFoundError, ValidationError
from pipeline.outputs import open_dataset
from pipeline.outputs.browse import GalleryFilter, save_view
from pipeline.outputs.exports import EXPORT_COLUMNS, export_task
from tests.factories import local_storage, make_settings, make_user, run_worker, submit


@pytest.fixture
def finished(database: Database, db_url: str, tmp_path: Path) -> tuple[str, object]:
    settings = make_settings(db_url, tmp_path)
    owner = make_user(database, "ana@example.org", admin=False)
    task_id = submit(database, settings, owner, count=6, images=4)
    run_worker(database, local_storage(tmp_path), settings)
    return task_id, settings


def test_a_task_has_the_csv_exports_columns_and_rows(database: Database, tmp_path: Path, finished: tuple) -> None:
    task_id, settings = finished
    frame = open_dataset(task_id, settings=settings)
    out = export_task(database, local_storage(tmp_path), task_id, "csv", tmp_path / "task.csv")
    with open(out, encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.reader(fh))
    assert list(frame.columns) == rows[0] == list(EXPORT_COLUMNS)
    assert len(frame) == len(rows) - 1 == 6
    assert list(frame["firstname"]) == [r[rows[0].index("firstname")] for r in rows[1:]]
    assert list(frame["persona_id"]) == [int(r[rows[0].index("persona_id")]) for r in rows[1:]]
    assert all(isinstance(keys, list) and len(keys) == 4 for keys in frame["images"])  # lists, not JSON text


def test_images_as_paths_or_bytes(tmp_path: Path, finished: tuple) -> None:
    task_id, settings = finished
    with_paths = open_dataset([task_id], images="paths", settings=settings)
    with_bytes = open_dataset(task_id, images="bytes", settings=settings)
    assert list(with_paths.columns[-2:]) == ["base_image_path", "image_paths"]
    first = with_paths.iloc[0]
    assert Path(first["base_image_path"]).is_file()
    assert len(first["image_paths"]) == 4
    assert Path(first["image_paths"][0]).read_bytes() == with_bytes.iloc[0]["image_bytes"][0]
    assert with_bytes.iloc[0]["base_image_bytes"] == Path(first["base_image_path"]).read_bytes()


def test_a_saved_view_of_a_user(database: Database, finished: tuple) -> None:
    task_id, settings = finished
    everyone = open_dataset(task_id, settings=settings)
    gender = str(everyone["gender"].iloc[0])
    with database.session() as session:
        user = q.get_user_by_email(session, "ana@example.org")  # the task's owner: the view is hers
    assert user is not None
    save_view(database, user, "one gender", GalleryFilter(task_ids=[task_id], genders=[gender]))
    view = open_dataset(view="one gender", user="ana@example.org", settings=settings)
    assert len(view) == int((everyone["gender"] == gender).sum()) > 0
    assert set(view["gender"]) == {gender}


def test_bad_requests_get_clear_errors(database: Database, finished: tuple) -> None:
    task_id, settings = finished
    make_user(database, "bea@example.org", admin=False)
    with pytest.raises(ValidationError, match="either a task id"):
        open_dataset(task_id, view="x", user="ana@example.org", settings=settings)
    with pytest.raises(ValidationError, match="images must be"):
        open_dataset(task_id, images="thumbnails", settings=settings)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="belongs to a user"):
        open_dataset(view="one gender", settings=settings)
    with pytest.raises(NotFoundError, match="no saved view"):
        open_dataset(view="nope", user="ana@example.org", settings=settings)
    with pytest.raises(NotFoundError, match="no task"):
        open_dataset(task_id, user="bea@example.org", settings=settings)  # not hers to see
    with pytest.raises(NotFoundError, match="no task"):
        open_dataset("doesnotexist", settings=settings)
