"""After a task's stages: quality checks per persona and the requested-vs-achieved demographic report.

Runs in the worker before the final status is written. Failures here never fail a task: the dataset is
there; a check that could not run is reported as such in the summary.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

import db.queries as q
from db.models import PersonaStatus
from pipeline.core.errors import StorageError
from pipeline.core.identity import Thresholds
from pipeline.core.targets import achieved_report
from pipeline.stages.context import TaskContext
from pipeline.stages.review.diversity import new_bio_terms, review_diversity
from pipeline.stages.review.identity import review_identity
from pipeline.stages.review.identity_lane import IdentityLane, catch_up, is_current
from pipeline.stages.review.identity_lane import enabled as identity_enabled
from pipeline.stages.review.quality import (
    LANGUAGE_CODES,
    PersonaInput,
    QualityReport,
    check_task,
    detect_language,
    image_hash,
    language_text,
)
from pipeline.storage import Storage

log = logging.getLogger(__name__)


def _image_hashes(storage: Storage, meta: dict[str, Any] | None) -> list[int]:
    """The perceptual hash of each image's thumbnail: stored with the image when it was made, or (an image from
    before that) read back and hashed now."""
    hashes = []
    for image in (meta or {}).get("images", []):
        if image.get("phash"):
            hashes.append(int(image["phash"], 16))
        elif key := image.get("thumb_key") or image.get("key"):
            with contextlib.suppress(StorageError):  # a missing object is visible elsewhere; it cannot be hashed
                hashes.append(image_hash(storage.get(key)))
    return hashes


class ReviewPrefetch:
    """The review's language detection, done on one background thread while the image stage waits on providers:
    a persona's text when its images are complete, so the work is spread over the stage instead of landing at
    its start, when the task's first calls go out. The review then only compares (``check_task``); what was not
    prefetched (a failed persona, a crash, a resume) it detects itself. Results are keyed by the text, so
    nothing stale is ever used. (Image hashes need no prefetch: they are made with the images.)"""

    def __init__(self, ctx: TaskContext):
        self.ctx = ctx
        self.languages: dict[str, tuple[str, float] | None] = {}
        self._texts: dict[int, str] = {}
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"review-{ctx.task_id}")

    def start(self) -> None:
        if LANGUAGE_CODES.get(self.ctx.language):
            self._pool.submit(self._guarded, self._read_texts)

    def persona_done(self, result_id: int) -> None:
        with contextlib.suppress(RuntimeError):  # shut down already (the task is stopping): the review detects it
            self._pool.submit(self._guarded, self._detect_language, result_id)

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

    def _read_texts(self) -> None:
        with self.ctx.db.session() as session:
            self._texts = {r.id: language_text(_bios(r), r.about) for r in q.list_results(session, self.ctx.task_pk)}

    def _detect_language(self, result_id: int) -> None:
        text = self._texts.get(result_id)
        if text is None:  # stored after the texts were read (the data stage runs alongside the images)
            with self.ctx.db.session() as session:
                row = q.get_result(session, result_id)
                text = language_text(_bios(row), row.about) if row is not None else None
        if text is not None and text not in self.languages and not self.ctx.cancel.is_set():
            self.languages[text] = detect_language(text)


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


@dataclass
class Review:
    """A task's review, computed (``compute_review``) and not yet stored (``store``)."""

    per_persona: dict[int, dict[str, Any]]
    summary: dict[str, Any]
    targets: dict[str, Any] | None
    diversity: dict[str, Any] | None = None
    bio_terms: dict[int, bytes] = field(default_factory=dict)  # the dataset map's input, by result id

    def store(self, session: Session, task: Any) -> None:
        q.store_review(session, task, self.per_persona, self.summary, self.targets)
        q.set_task_diversity(session, task, self.diversity)
        q.set_bio_terms(session, self.bio_terms)


def review_task(ctx: TaskContext) -> None:
    """Compute and store quality flags per persona, the task's quality summary and the targets report."""
    review = compute_review(ctx, None)
    with ctx.guarded() as (session, task):
        review.store(session, task)


def compute_review(ctx: TaskContext, prefetch: ReviewPrefetch | None) -> Review:
    """The quality flags per persona, the task's quality summary and the targets report (the worker stores them
    with the task's final status, in one transaction). ``prefetch``: what was computed during the image stage."""
    if prefetch is not None:
        prefetch.finish()
    with ctx.db.session() as session:
        rows = q.list_results(session, ctx.task_pk)
    people = [
        PersonaInput(
            id=r.id,
            firstname=r.firstname,
            lastname=r.lastname,
            bios=_bios(r),
            about=r.about,
            image_hashes=(_image_hashes(ctx.storage, r.image_meta) if r.status == PersonaStatus.COMPLETED.value
                          else ()),
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
    ctx.log.info("quality: %d of %d personas flagged", report.summary.get("flagged", 0), len(people))
    return Review(report.per_persona, report.summary, targets or None, review_diversity(ctx, rows),
                  new_bio_terms(rows))


class ReviewLanes:
    """The review's work done while the image stage runs: each completed persona's language detection and, when
    the identity check runs, its face analysis. ``catch_up_and_review`` then finishes what the lanes left."""

    def __init__(self, ctx: TaskContext):
        self.ctx = ctx
        self.identity: IdentityLane | None = None
        self.prefetch: ReviewPrefetch | None = None

    def start(self) -> None:
        if identity_enabled(self.ctx) and self.identity is None:
            self.identity = IdentityLane(self.ctx)
        if self.prefetch is None:
            self.prefetch = ReviewPrefetch(self.ctx)
            self.prefetch.start()

    def persona_done(self, result_id: int) -> None:
        if self.identity is not None:
            self.identity.submit(result_id)  # analysed in the background; generation goes on
        if self.prefetch is not None:
            self.prefetch.persona_done(result_id)

    def catch_up(self) -> None:
        """The identity check for every completed persona the lane has not analysed (after a resume: all)."""
        if identity_enabled(self.ctx):
            catch_up(self.ctx, self.identity)

    def review(self) -> Review:
        return compute_review(self.ctx, self.prefetch)

    def close(self) -> None:
        if self.prefetch is not None:
            self.prefetch.close()
        if self.identity is not None:
            self.identity.close()
