"""After a task's stages: quality checks per persona and the requested-vs-achieved demographic report.

Runs in the worker before the final status is written. Failures here never fail a task: the dataset is
there; a check that could not run is reported as such in the summary.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import db.queries as q
from db.models import PersonaStatus
from pipeline.errors import StorageError
from pipeline.identity import Thresholds, review_identity
from pipeline.identity_stage import enabled as identity_enabled
from pipeline.identity_stage import is_current
from pipeline.quality import PersonaInput, QualityReport, check_task
from pipeline.targets import achieved_report

if TYPE_CHECKING:
    from pipeline.runner import TaskContext

log = logging.getLogger(__name__)


def _thumbnails(ctx: TaskContext, meta: dict[str, Any] | None) -> list[bytes]:
    out = []
    for image in (meta or {}).get("images", []):
        key = image.get("thumb_key") or image.get("key")
        if not key:
            continue
        try:
            out.append(ctx.storage.get(key))
        except StorageError:
            continue  # a missing object is visible elsewhere; it cannot be hashed
    return out


def _merge_identity(ctx: TaskContext, rows: list[Any], report: QualityReport) -> None:
    """Identity flags and scores per persona (from the stored analyses) and the task's identity summary."""
    completed = [r for r in rows if r.status == PersonaStatus.COMPLETED.value]
    records = {r.id: ((r.image_meta or {}).get("identity") if is_current(r) else None) for r in completed}
    thresholds = Thresholds.from_dict((ctx.snapshot.get("identity") or {}).get("thresholds"))
    result = review_identity(records, thresholds, expected=len(completed))
    for pid, entry in result.per_persona.items():
        target = report.per_persona.setdefault(pid, {"flags": [], "details": {}})
        target["flags"] = [*target["flags"], *(f for f in entry["flags"] if f not in target["flags"])]
        target["details"].update(entry["details"])
        target["identity"] = entry["identity"]
    counts = dict(report.summary.get("flags") or {})
    for name, n in result.summary["flags"].items():
        counts[name] = counts.get(name, 0) + n
    report.summary["flags"] = dict(sorted(counts.items()))
    report.summary["flagged"] = sum(1 for e in report.per_persona.values() if e["flags"])
    report.summary["identity"] = result.summary


def review_task(ctx: TaskContext) -> None:
    """Compute and store quality flags per persona, the task's quality summary and the targets report."""
    with ctx.db.session() as session:
        rows = q.list_results(session, ctx.task_pk)
    people = [
        PersonaInput(
            id=r.id,
            firstname=r.firstname,
            lastname=r.lastname,
            bios={"bio_facebook": r.bio_facebook, "bio_instagram": r.bio_instagram, "bio_x": r.bio_x,
                  "bio_tiktok": r.bio_tiktok},
            about=r.about,
            image_bytes=_thumbnails(ctx, r.image_meta) if r.status == PersonaStatus.COMPLETED.value else (),
            grid_retries=sum(int(b.get("retries", 0)) for b in (r.image_meta or {}).get("blocks", [])),
        )
        for r in rows
    ]
    report = check_task(people, ctx.language)
    if identity_enabled(ctx):
        _merge_identity(ctx, rows, report)
    targets = achieved_report(
        ctx.targets, [{"gender": r.gender, "ethnicity": r.ethnicity, "age": r.age} for r in rows]
    )
    with ctx.guarded() as (session, task):
        q.store_review(session, task, report.per_persona, report.summary, targets or None)
    ctx.log.info("quality: %d of %d personas flagged", report.summary.get("flagged", 0), len(people))
