"""After a task's stages: quality checks per persona and the requested-vs-achieved demographic report.

Runs in the worker before the final status is written. Failures here never fail a task: the dataset is
there; a check that could not run is reported as such in the summary.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import db.queries as q
from db.models import PersonaStatus
from pipeline.errors import StorageError
from pipeline.identity import Thresholds, review_identity
from pipeline.identity_stage import enabled as identity_enabled
from pipeline.identity_stage import is_current
from pipeline.quality import (
    LANGUAGE_CODES,
    PersonaInput,
    QualityReport,
    check_task,
    detect_language,
    image_hash,
    language_text,
)
from pipeline.storage import Storage
from pipeline.targets import achieved_report

if TYPE_CHECKING:
    from pipeline.runner import TaskContext

log = logging.getLogger(__name__)


def _thumbnail_keys(meta: dict[str, Any] | None) -> list[str]:
    return [key for image in (meta or {}).get("images", []) if (key := image.get("thumb_key") or image.get("key"))]


def _thumbnail_hash(storage: Storage, key: str) -> int | None:
    try:
        return image_hash(storage.get(key))
    except StorageError:
        return None  # a missing object is visible elsewhere; it cannot be hashed


def _hash_thumbnails(storage: Storage, keys: list[str], known: Mapping[str, int]) -> list[int]:
    """The perceptual hash of each thumbnail (``known`` ones looked up, the others read and hashed)."""
    hashes = (known[key] if key in known else _thumbnail_hash(storage, key) for key in keys)
    return [h for h in hashes if h is not None]


class ReviewPrefetch:
    """The review's per-persona work, done on one background thread while the image stage waits on providers:
    the language of every persona's text (known once the data stage is done) and the perceptual hashes of each
    persona's thumbnails as soon as it is complete. The review itself then only compares (``check_task``);
    whatever was not prefetched (a crash, a resume) it computes as before. Results are keyed by their input
    (the text, the thumbnail's key), so nothing stale is ever used."""

    def __init__(self, ctx: TaskContext):
        self.ctx = ctx
        self.languages: dict[str, tuple[str, float] | None] = {}
        self.hashes: dict[str, int] = {}
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"review-{ctx.task_id}")

    def start(self) -> None:
        self._pool.submit(self._guarded, self._detect_languages)

    def persona_done(self, result_id: int) -> None:
        with contextlib.suppress(RuntimeError):  # shut down already (the task is stopping): the review hashes it
            self._pool.submit(self._guarded, self._hash_persona, result_id)

    def finish(self) -> None:
        """Wait for what was submitted (the review needs it, and would otherwise compute it itself)."""
        self._pool.shutdown(wait=True)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _guarded(self, job: Callable[..., None], *args: Any) -> None:
        try:
            job(*args)
        except Exception:  # only a head start: the review computes whatever is missing
            log.debug("review prefetch failed", exc_info=True)

    def _detect_languages(self) -> None:
        if not LANGUAGE_CODES.get(self.ctx.language):
            return
        with self.ctx.db.session() as session:
            texts = [language_text(_bios(r), r.about) for r in q.list_results(session, self.ctx.task_pk)]
        for text in texts:
            if self.ctx.cancel.is_set() or self.ctx.stopping.is_set():
                return
            if text not in self.languages:
                self.languages[text] = detect_language(text)

    def _hash_persona(self, result_id: int) -> None:
        with self.ctx.db.session() as session:
            row = q.get_result(session, result_id)
            keys = _thumbnail_keys(row.image_meta) if row is not None else []
        for key in keys:
            value = _thumbnail_hash(self.ctx.storage, key)
            if value is not None:
                self.hashes[key] = value


def _bios(row: Any) -> dict[str, str | None]:
    return {"bio_facebook": row.bio_facebook, "bio_instagram": row.bio_instagram, "bio_x": row.bio_x,
            "bio_tiktok": row.bio_tiktok}


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
    prefetch = ctx.review_prefetch
    if prefetch is not None:
        prefetch.finish()
    hashes = prefetch.hashes if prefetch is not None else {}
    with ctx.db.session() as session:
        rows = q.list_results(session, ctx.task_pk)
    people = [
        PersonaInput(
            id=r.id,
            firstname=r.firstname,
            lastname=r.lastname,
            bios=_bios(r),
            about=r.about,
            image_hashes=(_hash_thumbnails(ctx.storage, _thumbnail_keys(r.image_meta), hashes)
                          if r.status == PersonaStatus.COMPLETED.value else ()),
            grid_retries=sum(int(b.get("retries", 0)) for b in (r.image_meta or {}).get("blocks", [])),
        )
        for r in rows
    ]
    report = check_task(people, ctx.language, languages=prefetch.languages if prefetch is not None else None)
    if identity_enabled(ctx):
        _merge_identity(ctx, rows, report)
    targets = achieved_report(
        ctx.targets, [{"gender": r.gender, "ethnicity": r.ethnicity, "age": r.age} for r in rows]
    )
    with ctx.guarded() as (session, task):
        q.store_review(session, task, report.per_persona, report.summary, targets or None)
    ctx.log.info("quality: %d of %d personas flagged", report.summary.get("flagged", 0), len(people))
