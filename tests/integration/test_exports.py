"""Exports on SQLite and PostgreSQL: every format parses back and equals the gallery's filtered view, CSV is
Excel-safe, ZIP folders are unique and missing images are listed, the HF imagefolder layout is complete,
outputs are byte-identical across runs, and a failed export leaves nothing behind."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import threading
import zipfile
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

import db.queries as q
from db.models import GenerationResult, User
from db.session import Database
from pipeline.core.errors import NotFoundError, ValidationError
from pipeline.outputs.browse import GalleryFilter, query_page, set_favorite, set_tags
from pipeline.outputs.exports import EXPORT_COLUMNS, FORMATS, export_task, export_view
from pipeline.storage import LocalStorage
from tests.factories import local_storage, make_settings, make_user, results_of, run_worker, submit

TRICKY = {
    "job_title": '=HYPERLINK("http://evil.example","click")',
    "about": "+351 call me",
    "bio_x": "@handle, with a comma and a \"quote\"\nand a newline",
    "workplace": "\tTabbed",
    "edu_study": "-minus",
    "bio_tiktok": "\rcarriage",
}


def insert_task(database: Database, owner: User, task_id: str, personas: list[dict[str, Any]]) -> None:
    with database.transaction() as session:
        task = q.insert_task(
            session, task_id=task_id, user_id=owner.id, persona_description="rows without a worker",
            bio_language="English", number_to_generate=len(personas), images_per_persona=4,
            config_snapshot={"app_version": "test", "toggles": {"randomize_image_style": True}},
        )
        q.insert_personas(session, task.id, 1, personas)


def persona(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "firstname": ["Ana", "Bruno", "Célia", "Duarte"][i % 4],
        "lastname": "Silva",
        "gender": "f" if i % 2 else "m",
        "age": None if i == 3 else 20 + i,
        "ethnicity": "Mixed",
        "current_city": "Porto",
        "bio_facebook": f"bio {i}",
        **extra,
    }


def read_records(fmt: str, path: Path) -> list[dict[str, Any]]:
    if fmt == "json":
        return list(json.loads(path.read_text(encoding="utf-8")))
    if fmt == "jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    if fmt == "parquet":
        return list(pq.read_table(path).to_pylist())
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames or ()) == EXPORT_COLUMNS
        return list(reader)


def zip_entries(path: Path) -> dict[str, bytes]:
    """The archive's entries, after checking every CRC with ``zipfile`` and, where Info-ZIP is installed, with
    ``unzip -t`` too (a second reader of the headers the export writes itself)."""
    if shutil.which("unzip"):
        done = subprocess.run(["unzip", "-tq", str(path)], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None
        return {name: zf.read(name) for name in zf.namelist()}


def test_tabular_formats_equal_the_filtered_view(database: Database, tmp_path: Path) -> None:
    owner = make_user(database, "owner@example.org", admin=False)
    other = make_user(database, "other@example.org", admin=False)
    insert_task(database, owner, "tab000000001", [persona(0, **TRICKY), *(persona(i) for i in range(1, 8))])
    rows = results_of(database, "tab000000001")
    with database.transaction() as session:  # image keys for the key columns
        for row in rows:
            session.execute(
                sa.update(GenerationResult).where(GenerationResult.id == row.id).values(
                    base_image_url=f"tab000000001/b001-s{row.slot:02d}/base.png",
                    images=[f"tab000000001/b001-s{row.slot:02d}/img{k:02d}.jpg" for k in range(4)], image_count=4,
                )
            )
    set_tags(database, owner, rows[0].id, ["-dash first", "keep"])
    for row in rows[:5]:
        set_favorite(database, owner, row.id, True)
    storage = LocalStorage(tmp_path / "media")

    flt = GalleryFilter(task_ids=["tab000000001"], favorite=True, genders=["m", "f"])
    page = query_page(database, owner, flt, page_size=500).rows
    assert len(page) == 5
    for fmt in ("csv", "json", "jsonl", "parquet"):
        out = export_view(database, storage, owner, flt, fmt, tmp_path / "out" / f"view.{fmt}")
        again = export_view(database, storage, owner, flt, fmt, tmp_path / "again" / f"view.{fmt}")
        assert out.read_bytes() == again.read_bytes(), fmt  # deterministic
        records = read_records(fmt, out)
        assert [int(r["persona_id"]) for r in records] == [r["id"] for r in page], fmt
        for record, row in zip(records, page, strict=True):
            assert list(record) == list(EXPORT_COLUMNS)
            if fmt == "csv":
                assert record["task_id"] == "tab000000001" and record["favorite"] == "true"
                assert record["age"] == ("" if row["age"] is None else str(row["age"]))
                assert json.loads(record["tags"]) == row["tags"]
                assert json.loads(record["images"]) == [f"{row['base_image_url'][:-8]}img{k:02d}.jpg" for k in range(4)]
                for name in q.GALLERY_PERSONA_FIELDS:
                    value = row[name]
                    text = "" if value is None else str(value)
                    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
                        text = "'" + text
                    assert record[name] == text, name
            else:
                for name in q.GALLERY_PERSONA_FIELDS:
                    assert record[name] == row[name], (fmt, name)
                assert (record["favorite"], record["tags"], record["language"]) == (True, row["tags"], "English")
                assert record["base_image"] == row["base_image_url"] and len(record["images"]) == 4
    raw = (tmp_path / "out" / "view.csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    text = raw.decode("utf-8-sig")
    assert "'=HYPERLINK" in text and "'+351" in text and "'-minus" in text and "'\tTabbed" in text
    assert '"\'@handle' in text and "'\rcarriage" in text

    # export_task (the CLI): every persona, no user needed; another user cannot export someone else's task.
    out = export_task(database, storage, "tab000000001", "jsonl", tmp_path / "task.jsonl")
    assert len(read_records("jsonl", out)) == 8
    with pytest.raises(NotFoundError):
        export_task(database, storage, "tab000000001", "csv", tmp_path / "x.csv", user=other)
    with pytest.raises(NotFoundError):
        export_view(database, storage, other, GalleryFilter(task_ids=["tab000000001"]), "csv", tmp_path / "x.csv")
    with pytest.raises(NotFoundError):
        export_task(database, storage, "nosuchtask00", "csv", tmp_path / "x.csv")
    assert not (tmp_path / "x.csv").exists()

    # an empty view still gives valid files
    empty = GalleryFilter(task_ids=["tab000000001"], text="no such words")
    assert json.loads(export_view(database, storage, owner, empty, "json", tmp_path / "e.json").read_text()) == []
    assert pq.read_table(export_view(database, storage, owner, empty, "parquet", tmp_path / "e.parquet")).num_rows == 0
    assert read_records("csv", export_view(database, storage, owner, empty, "csv", tmp_path / "e.csv")) == []
    assert export_view(database, storage, owner, empty, "jsonl", tmp_path / "e.jsonl").read_bytes() == b""


def test_zip_and_hf_with_images(database: Database, db_url: str, tmp_path: Path) -> None:
    settings = make_settings(db_url, tmp_path)
    storage = local_storage(tmp_path)
    owner = make_user(database, "owner@example.org", admin=False)
    task_id = submit(database, settings, owner, count=3, images=4)
    run_worker(database, storage, settings)
    rows = results_of(database, task_id)
    with database.transaction() as session:  # two personas with the same name
        for row in rows[:2]:
            session.execute(
                sa.update(GenerationResult).where(GenerationResult.id == row.id).values(firstname="Ana", lastname="Silva")
            )
    # A second task in the view: a legacy row (unreachable public URL) and a row whose object was deleted.
    insert_task(database, owner, "leg000000001", [persona(0), persona(1)])
    legacy = results_of(database, "leg000000001")
    with database.transaction() as session:
        session.execute(
            sa.update(GenerationResult).where(GenerationResult.id == legacy[0].id)
            .values(base_image_url="http://127.0.0.1:9/gone.jpg", images=[], image_count=0)
        )
        session.execute(
            sa.update(GenerationResult).where(GenerationResult.id == legacy[1].id)
            .values(base_image_url="leg000000001/b001-s01/base.png", images=[], image_count=0)
        )
    with database.session() as session:
        task = q.get_task(session, task_id)
        assert task is not None
        snapshot = task.config_snapshot

    flt = GalleryFilter(task_ids=[task_id, "leg000000001"])
    out = export_view(database, storage, owner, flt, "zip", tmp_path / "view.zip")
    entries = zip_entries(out)
    manifest = json.loads(entries["manifest.json"])
    folders = sorted({name.split("/")[0] for name in entries if "/" in name})
    assert len(folders) == 5 == len(set(folders))
    ana = [f for f in folders if f.endswith("ana-silva") and f.startswith(task_id)]
    assert ana == [f"{task_id}_001-00_ana-silva", f"{task_id}_001-01_ana-silva"]
    for folder in ana:
        info = json.loads(entries[f"{folder}/persona.json"])
        assert (info["firstname"], info["task_id"]) == ("Ana", task_id)
        assert info["files"] == {"base": "base.png", "images": ["img01.jpg", "img02.jpg", "img03.jpg", "img04.jpg"]}
        assert entries[f"{folder}/base.png"].startswith(b"\x89PNG")
        assert all(entries[f"{folder}/img0{k}.jpg"].startswith(b"\xff\xd8\xff") for k in range(1, 5))
        assert info["image_meta"]["images"][0]["key"] == info["images"][0]
    assert manifest["counts"]["personas"] == 5 and manifest["counts"]["images"] == 15
    assert manifest["counts"]["missing"] == 2 and len(manifest["missing"]) == 2
    assert {m["uri"] for m in manifest["missing"]} == {"http://127.0.0.1:9/gone.jpg", "leg000000001/b001-s01/base.png"}
    assert manifest["filter"] == flt.to_query_params() and manifest["exported_at"]
    tasks = {t["task_id"]: t for t in manifest["tasks"]}
    assert tasks[task_id]["config_snapshot"] == snapshot and tasks["leg000000001"]["language"] == "English"
    assert list(entries)[-1] == "manifest.json"

    # Same data, same bytes: every entry but the manifest's export time.
    again = zip_entries(export_view(database, storage, owner, flt, "zip", tmp_path / "again.zip"))
    assert {k: v for k, v in again.items() if k != "manifest.json"} == {
        k: v for k, v in entries.items() if k != "manifest.json"
    }
    manifest2 = json.loads(again["manifest.json"])
    assert {**manifest2, "exported_at": None} == {**manifest, "exported_at": None}

    # One task only: folders are <batch>-<slot>_<slug> and still unique.
    single = zip_entries(export_task(database, storage, task_id, "zip", tmp_path / "task.zip"))
    assert {n.split("/")[0] for n in single if n.endswith("persona.json")} >= {"001-00_ana-silva", "001-01_ana-silva"}

    # Hugging Face imagefolder, as a folder...
    hf = export_view(database, storage, owner, flt, "hf", tmp_path / "hf")
    lines = [json.loads(line) for line in (hf / "train" / "metadata.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 15
    for line in lines:
        assert (hf / "train" / line["file_name"]).is_file()
        assert line["image_role"] in ("base", "variation") and "persona_id" in line and "images" not in line
    assert {line["persona_id"] for line in lines} == {r.id for r in rows}
    card = (hf / "README.md").read_text(encoding="utf-8")
    header = card.split("---")[1]
    assert "license: other" in header and "configs:" in header and 'path: "train/**"' in header
    assert task_id in card and '"randomize_image_style"' in card and "| `job_title` |" in card
    files = sorted(p.relative_to(hf).as_posix() for p in hf.rglob("*") if p.is_file())
    assert files == sorted(["README.md", "train/metadata.jsonl", *(f"train/{line['file_name']}" for line in lines)])

    # ... re-exported in place (an earlier export is replaced), and as a zip with the same bytes inside.
    first_card = card
    export_view(database, storage, owner, flt, "hf", tmp_path / "hf")
    assert (hf / "README.md").read_text(encoding="utf-8") == first_card
    hf_zip = zip_entries(export_view(database, storage, owner, flt, "hf", tmp_path / "hf.zip"))
    assert set(hf_zip) == set(files)
    assert hf_zip["train/metadata.jsonl"] == (hf / "train" / "metadata.jsonl").read_bytes()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary leftovers


class ExplodingStorage(LocalStorage):
    def get(self, uri: str) -> bytes:
        raise RuntimeError("disk on fire")


def test_failed_export_leaves_nothing(database: Database, tmp_path: Path) -> None:
    owner = make_user(database, "owner@example.org", admin=False)
    insert_task(database, owner, "bad000000001", [persona(i) for i in range(3)])
    with database.transaction() as session:
        session.execute(sa.update(GenerationResult).values(base_image_url="bad000000001/base.png"))
    storage = ExplodingStorage(tmp_path / "media")
    flt = GalleryFilter(task_ids=["bad000000001"])
    target = tmp_path / "exports"
    target.mkdir()
    (target / "old.zip").write_bytes(b"previous export")
    for fmt, name in (("zip", "new.zip"), ("hf", "hf"), ("hf", "hf.zip"), ("zip", "old.zip")):
        with pytest.raises(RuntimeError):
            export_view(database, storage, owner, flt, fmt, target / name)
    assert sorted(p.name for p in target.iterdir()) == ["old.zip"]
    assert (target / "old.zip").read_bytes() == b"previous export"

    with pytest.raises(ValidationError, match="csv, json, jsonl, parquet, parquet-images, zip, hf"):
        export_view(database, storage, owner, flt, "xlsx", target / "x.xlsx")
    (target / "folder").mkdir()
    (target / "folder" / "mine.txt").write_text("not an export")
    with pytest.raises(ValidationError):
        export_view(database, storage, owner, flt, "csv", target / "folder")
    with pytest.raises(ValidationError):
        export_view(database, storage, owner, flt, "hf", target / "folder")  # never replaces a foreign folder
    assert (target / "folder" / "mine.txt").read_text() == "not an export"
    assert sorted(p.name for p in target.iterdir()) == ["folder", "old.zip"]
    assert set(FORMATS) == {"csv", "json", "jsonl", "parquet", "parquet-images", "zip", "hf"}


def test_parquet_with_embedded_images_declares_the_hf_image_feature(
    database: Database, db_url: str, tmp_path: Path
) -> None:
    import io

    from PIL import Image

    settings = make_settings(db_url, tmp_path)
    storage = local_storage(tmp_path)
    owner = make_user(database, "owner@example.org", admin=False)
    task_id = submit(database, settings, owner, count=2, images=4)
    run_worker(database, storage, settings)
    out = export_task(database, storage, task_id, "parquet-images", tmp_path / "images.parquet")
    table = pq.read_table(out)
    assert table.num_rows == 2 * (1 + 4)  # the base and every variation, one row each
    image_type = table.schema.field("image").type
    assert {image_type.field(i).name for i in range(image_type.num_fields)} == {"bytes", "path"}
    features = json.loads(table.schema.metadata[b"huggingface"])["info"]["features"]
    assert features["image"] == {"_type": "Image"} and features["firstname"]["_type"] == "Value"
    rows = table.to_pylist()
    assert {r["image_role"] for r in rows} == {"base", "variation"}
    with Image.open(io.BytesIO(rows[1]["image"]["bytes"])) as img:
        assert img.format == "JPEG" and img.size[0] > 0
    assert all(set(EXPORT_COLUMNS) <= set(r) for r in rows)


def test_zip_manifest_carries_provenance(database: Database, db_url: str, tmp_path: Path) -> None:
    settings = make_settings(db_url, tmp_path)
    storage = local_storage(tmp_path)
    owner = make_user(database, "owner@example.org", admin=False)
    task_id = submit(database, settings, owner, count=2, images=4, seed=1234)
    run_worker(database, storage, settings)
    out = export_task(database, storage, task_id, "zip", tmp_path / "p.zip")
    manifest = json.loads(zip_entries(out)["manifest.json"])
    (task,) = manifest["tasks"]
    assert task["seed"] == 1234 and task["attempts"] == 1 and task["duration_seconds"] is not None
    snapshot = task["config_snapshot"]
    assert {"bio_prompts", "toggles", "providers", "models", "base_prompt_append", "app_version"} <= set(snapshot)
    assert task["quality_summary"]["personas"] == 2 and task["failures"] == []


class ThreadRecordingStorage(LocalStorage):
    """Local files, read as if remote when ``remote`` is set; records the thread of every read."""

    def __init__(self, root: Path, remote: bool):
        super().__init__(root)
        self.remote = remote
        self.readers: set[int] = set()

    def get(self, uri: str) -> bytes:
        self.readers.add(threading.get_ident())
        return super().get(uri)


@pytest.mark.parametrize("remote", [False, True], ids=["local", "remote"])
def test_images_read_ahead_keep_persona_order_and_missing_files(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, remote: bool
) -> None:
    """More personas than reader threads: the read-ahead window slides, yet every folder gets its own images in
    order, a missing object is listed against the right persona, and the bytes match a serial read. A remote
    storage is read on the reader threads, a local one in the exporting thread."""
    import pipeline.outputs.exports.images as export_images

    monkeypatch.setattr(export_images, "IMAGE_READERS", 2)
    owner = make_user(database, "owner@example.org", admin=False)
    insert_task(database, owner, "ahead0000001", [persona(i, firstname=f"P{i}") for i in range(7)])
    storage = ThreadRecordingStorage(tmp_path / "media", remote)
    rows = results_of(database, "ahead0000001")
    with database.transaction() as session:
        for i, row in enumerate(rows):
            keys = [f"ahead0000001/p{i}/img{k}.jpg" for k in range(3)]
            for k, key in enumerate(keys):
                if (i, k) != (3, 1):  # persona 3's second image was never stored
                    storage.put(key, b"\xff\xd8\xff" + f"persona {i} image {k}".encode(), "image/jpeg")
            session.execute(sa.update(GenerationResult).where(GenerationResult.id == row.id)
                            .values(images=keys, image_count=3))
    entries = zip_entries(export_task(database, storage, "ahead0000001", "zip", tmp_path / "ahead.zip"))
    folders = [name.split("/")[0] for name in entries if name.endswith("persona.json")]
    assert [f.split("_", 1)[1] for f in folders] == [f"p{i}-silva" for i in range(7)]
    for i, folder in enumerate(folders):
        present = [k for k in range(3) if (i, k) != (3, 1)]
        info = json.loads(entries[f"{folder}/persona.json"])
        assert info["files"]["images"] == [f"img{k + 1:02d}.jpg" for k in present]
        for k in present:
            assert entries[f"{folder}/img{k + 1:02d}.jpg"].endswith(f"persona {i} image {k}".encode())
    manifest = json.loads(entries["manifest.json"])
    assert [(m["folder"], m["file"]) for m in manifest["missing"]] == [(folders[3], "img02")]
    assert manifest["counts"]["images"] == 7 * 3 - 1
    assert (threading.get_ident() in storage.readers) is not remote and storage.readers


def test_json_columns_holding_nan_still_read(database: Database) -> None:
    """JSON columns are decoded with orjson, which refuses NaN; the standard encoder writes it, so a document
    holding one falls back to the standard decoder instead of failing the query. (PostgreSQL refuses NaN in
    JSON on the way in.)"""
    if database.engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL never stores NaN in a JSON column")
    owner = make_user(database, "owner@example.org", admin=False)
    insert_task(database, owner, "nan000000001", [persona(0)])
    with database.transaction() as session:
        session.execute(sa.update(GenerationResult).values(quality={"sharpness": float("nan"), "ok": 1}))
    with database.session() as session:
        (quality,) = session.execute(sa.select(GenerationResult.quality)).scalars()
    assert quality["ok"] == 1 and quality["sharpness"] != quality["sharpness"]
