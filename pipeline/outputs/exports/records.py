"""Export records: the columns, one record per persona row, and the context an export carries from row to row
(the tasks in view, the counts, the images found missing) for the manifest and the dataset card."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

import db.queries as q
from pipeline.storage import Storage

FORMATS = ("csv", "json", "jsonl", "parquet", "parquet-images", "zip", "hf")
IMAGE_FORMATS = frozenset({"parquet-images", "zip", "hf"})  # these read image_meta and quality whole
CHUNK_ROWS = 500  # rows fetched from the database at a time

PERSONA_FIELDS: tuple[str, ...] = q.GALLERY_PERSONA_FIELDS
EXPORT_COLUMNS: tuple[str, ...] = (
    "task_id",
    "persona_id",
    "batch_number",
    "slot",
    "status",
    "error",
    *PERSONA_FIELDS,
    "language",
    "favorite",
    "tags",
    "rating",
    "image_count",
    "curation",
    "quality_flags",
    "identity_score",
    "identity_worst_distance",
    "base_faces",
    "face_leakage_distance",
    "base_image",
    "images",
)
INT_COLUMNS = frozenset({"persona_id", "batch_number", "slot", "age", "rating", "image_count", "base_faces"})
FLOAT_COLUMNS = frozenset({"identity_score", "identity_worst_distance", "face_leakage_distance"})
LIST_COLUMNS = frozenset({"tags", "images", "quality_flags"})

Record = dict[str, Any]  # one export row: ``EXPORT_COLUMNS`` in order
Row = dict[str, Any]  # the database row it came from (``gallery_export_rows``)
Rows = Iterable[tuple[Record, Row]]


@dataclass
class ExportContext:
    """What one export knows beyond the current row, and what it has counted so far."""

    storage: Storage
    fmt: str
    tasks: list[dict[str, Any]]
    filter_params: dict[str, str]
    multi_task: bool
    counts: dict[str, int] = field(default_factory=lambda: {"personas": 0, "images": 0, "missing": 0})
    by_status: dict[str, int] = field(default_factory=dict)
    missing: list[dict[str, Any]] = field(default_factory=list)

    def count(self, record: Record) -> None:
        """One more persona written."""
        self.counts["personas"] += 1
        status = str(record["status"])
        self.by_status[status] = self.by_status.get(status, 0) + 1


def to_record(row: Row) -> Record:
    """One export record from a database row."""
    record = {name: row[name] for name in EXPORT_COLUMNS}
    record["favorite"] = bool(record["favorite"])
    for name in LIST_COLUMNS:
        record[name] = list(record[name] or [])
    return record


def image_identity(row: Row, role: str, index: int | None) -> dict[str, Any]:
    """The identity check's findings for one image, empty when the check did not run."""
    identity = (row.get("quality") or {}).get("identity") or {}
    if not identity:
        return {"image_faces": None, "image_face_distance": None}
    if role == "base":
        distance = 0.0 if identity.get("score") is not None else None
        return {"image_faces": identity.get("base_faces"), "image_face_distance": distance}
    i = (index or 0) - 1
    faces, distances = identity.get("faces") or [], identity.get("distances") or []
    return {
        "image_faces": faces[i] if 0 <= i < len(faces) else None,
        "image_face_distance": distances[i] if 0 <= i < len(distances) else None,
    }


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot export {type(value).__name__}")


def dumps(value: Any, *, indent: int | None = None) -> str:
    """JSON text, non-ASCII kept as it is, datetimes in ISO 8601."""
    return json.dumps(value, ensure_ascii=False, indent=indent, default=_json_default)


def pretty_json(value: Any) -> bytes:
    """Indented UTF-8 JSON with a final newline: the files inside a ZIP export."""
    return orjson.dumps(value, default=_json_default, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)


def task_entries(ctx: ExportContext) -> list[dict[str, Any]]:
    """Each task in view as the manifest and the dataset card describe it: request, timing, configuration, quality."""
    return [
        {
            "task_id": t["task_id"],
            "description": t["persona_description"],
            "language": t["bio_language"],
            "number_to_generate": t["number_to_generate"],
            "images_per_persona": t["images_per_persona"],
            "seed": t["seed"],
            "status": t["status"],
            "created_at": t["created_at"],
            "started_at": t["started_at"],
            "completed_at": t["completed_at"],
            "duration_seconds": (
                round((t["completed_at"] - t["started_at"]).total_seconds(), 1)
                if t["completed_at"] and t["started_at"]
                else None
            ),
            "attempts": t["attempts"],
            "rerun_of": t["rerun_of"],
            "config_snapshot": t["config_snapshot"],
            "failures": [line for line in (t["error_log"] or "").splitlines() if line.strip()],
            "demographic_targets": t["targets"],
            "targets_report": t["targets_report"],
            "quality_summary": t["quality_summary"],
            "diversity": t["diversity"],  # figures computed at review time, each with how to read it
            "identity_check": (t["config_snapshot"] or {}).get("identity"),  # enabled, model and thresholds
            # each provider's calls (ok, failed), images, reported tokens (None: not reported), seconds, cost
            "provider_usage": t.get("provider_usage", []),
        }
        for t in ctx.tasks
    ]
