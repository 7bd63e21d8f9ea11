"""Identity consistency of each persona's photos, measured with real face embeddings (dlib, on the CPU, offline).

- Faces are found with dlib's HOG frontal detector, aligned with its 5-point landmark model and embedded with its
  ResNet model (128-d). Both models ship inside the ``face-recognition-models`` package: nothing is downloaded.
  Two photos of one person are usually within 0.6 of each other; different people are usually farther.
- Per persona: the faces in the base selfie (exactly one expected); per variation, the faces found (the grid
  check: each quadrant of a 2x2 grid must hold one face) and the distance to the base; an identity score (the
  share of variations within the threshold) and the worst distance.
- Per task: duplicate identities (two personas whose bases are within the duplicate threshold) and face-library
  leakage (a base too close to the real library face it was made from).
- dlib holds the GIL while it computes, so the analysis runs in a child process: the generation threads are
  never blocked by it, and it uses the machine's other core.

This module is pure (no database); ``pipeline.stages.review.identity_lane`` runs it for a task.
"""

from __future__ import annotations

import atexit
import pickle
import sys
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.core.errors import ImageCheckError, PipelineError
from pipeline.core.identity import (
    FLAG_DUPLICATE,
    FLAG_GRID_FACES,
    FLAG_INCONSISTENT,
    FLAG_LEAKAGE,
    FLAG_NO_FACE,
    FLAG_SEVERAL_FACES,
    IDENTITY_FLAGS,
    MODEL,
    VERSION,
    Thresholds,
)
from pipeline.core.images import decode_image, image_size
from pipeline.stages.review.frames import read_frame, start_child, stop_child, write_frame

MAX_SIDE = 800  # images are scaled down to this before detection: selfies have large faces
MIN_DETECTION_SCORE = 0.5  # HOG detections below this are mostly noise (a patterned shirt scored 0.34)
HISTOGRAM_EDGES: tuple[float, ...] = tuple(round(i * 0.05, 2) for i in range(25))  # 0.00 .. 1.20


class IdentityError(PipelineError):
    """The face models could not be loaded or run."""


# --- embeddings ---------------------------------------------------------------------------------------------


def _rgb_array(data: bytes) -> tuple[Any, float]:
    """The image as a contiguous uint8 RGB array no larger than MAX_SIDE, and the factor back to full size."""
    full = max(image_size(data))
    rgb = decode_image(data, draft_side=MAX_SIDE)
    if max(rgb.size) > MAX_SIDE:
        rgb.thumbnail((MAX_SIDE, MAX_SIDE))
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8)), full / max(rgb.size)


class FaceEmbedder:
    """dlib's detector, 5-point aligner and ResNet embedder. Not thread-safe: one per process (or thread)."""

    def __init__(self) -> None:
        try:
            # deferred: dlib and its models load only in the analysis process, not in every worker
            import dlib
            import face_recognition_models as models
        except ImportError as exc:  # pragma: no cover - both are in requirements.txt
            raise IdentityError(f"the identity check needs dlib-bin and face-recognition-models: {exc}") from exc
        self._detector = dlib.get_frontal_face_detector()
        self._aligner = dlib.shape_predictor(models.pose_predictor_five_point_model_location())
        self._model = dlib.face_recognition_model_v1(models.face_recognition_model_location())

    def analyze(self, data: bytes) -> dict[str, Any]:
        """``faces`` found; for the largest face its ``embedding`` (128 floats), ``box`` (full-size px), ``score``."""
        try:
            image, scale = _rgb_array(data)
        except ImageCheckError as exc:  # an unreadable image has no face; say why
            return {"faces": 0, "error": f"unreadable image: {exc}"}
        upsample = 1 if max(image.shape[:2]) < 400 else 0  # small images: look for smaller faces too
        rects, scores, _kinds = self._detector.run(image, upsample, 0.0)
        faces = [(r, s) for r, s in zip(rects, scores, strict=True) if s >= MIN_DETECTION_SCORE]
        out: dict[str, Any] = {"faces": len(faces)}
        if faces:
            rect, score = max(faces, key=lambda f: f[0].area())
            shape = self._aligner(image, rect)
            vector = self._model.compute_face_descriptor(image, shape)
            out["embedding"] = [round(float(x), 5) for x in vector]
            out["box"] = [round(v * scale) for v in (rect.left(), rect.top(), rect.right(), rect.bottom())]
            out["score"] = round(float(score), 3)
        return out


_EMBEDDER: FaceEmbedder | None = None


def analyze_local(images: Sequence[bytes]) -> list[dict[str, Any]]:
    """Analyse images in this process (the child process's entry point; also used by tests and benchmarks)."""
    global _EMBEDDER
    if _EMBEDDER is None:
        _EMBEDDER = FaceEmbedder()
    return [_EMBEDDER.analyze(data) for data in images]


class _Child:
    """One analysis process: ``python -m pipeline.stages.review.identity``, fed length-prefixed pickles over its stdin/stdout.

    A plain subprocess rather than multiprocessing: nothing re-imports the parent's main script (Streamlit's,
    pytest's), and the child exits on its own when the parent goes away (its stdin closes).
    """

    def __init__(self) -> None:
        self.proc = start_child("pipeline.stages.review.identity")

    def call(self, images: Sequence[bytes]) -> list[dict[str, Any]]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        write_frame(self.proc.stdin, list(images))
        reply = read_frame(self.proc.stdout)
        if isinstance(reply, BaseException):
            raise IdentityError(f"face analysis failed: {reply}")
        return list(reply)

    def close(self) -> None:
        stop_child(self.proc, timeout=5)


def serve() -> None:
    """The child's loop: read a list of images, answer their analyses, until stdin closes."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # anything printed by a library must not corrupt the frames
    while True:
        try:
            images = read_frame(stdin)
        except EOFError:
            return
        try:
            reply: object = analyze_local(images)
        except Exception as exc:  # report it to the parent, keep serving
            reply = IdentityError(f"{type(exc).__name__}: {exc}")
        write_frame(stdout, reply)


class _ChildPool:
    """Up to ``processes`` analysis processes for this whole process, started on first use, reused after."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._idle: list[_Child] = []
        self._started = 0
        self.processes = 1
        atexit.register(self.shutdown)

    def _take(self) -> _Child:
        with self._cond:
            while not self._idle and self._started >= self.processes:
                self._cond.wait()
            if self._idle:
                return self._idle.pop()
            self._started += 1
        try:
            return _Child()
        except OSError as exc:
            self._give_back(None)
            raise IdentityError(f"could not start the face analysis process: {exc}") from exc

    def _give_back(self, child: _Child | None) -> None:
        with self._cond:
            if child is None:
                self._started -= 1
            else:
                self._idle.append(child)
            self._cond.notify()

    def run(self, images: Sequence[bytes]) -> list[dict[str, Any]]:
        for attempt in (1, 2):  # a child that died (killed, out of memory) is replaced once
            child = self._take()
            try:
                result = child.call(images)
            except (OSError, EOFError, pickle.UnpicklingError) as exc:
                child.proc.kill()
                self._give_back(None)
                if attempt == 2:
                    raise IdentityError(f"the face analysis process failed twice: {exc}") from exc
                continue
            except BaseException:
                child.proc.kill()  # interrupted mid-call: its pipe state is unknown
                self._give_back(None)
                raise
            self._give_back(child)
            return result
        raise AssertionError("unreachable")

    def shutdown(self) -> None:
        with self._cond:
            idle, self._idle = self._idle, []
            self._started -= len(idle)
        for child in idle:
            child.close()


CHILD_POOL = _ChildPool()


def analyze_images(images: Sequence[bytes]) -> list[dict[str, Any]]:
    """Analyse images in a child process (the GIL stays free for generation)."""
    return CHILD_POOL.run(images) if images else []


def distance(a: Sequence[float], b: Sequence[float]) -> float:
    return float(np.linalg.norm(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)))


def persona_record(base: Mapping[str, Any], variations: Sequence[Mapping[str, Any]],
                   reference: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What is stored per persona (``image_meta['identity']``): the base's faces and embedding, and per variation
    its faces and distance to the base (variation embeddings are not kept). ``reference`` is the library face."""
    base_vector = base.get("embedding")

    def against_base(found: Mapping[str, Any]) -> dict[str, Any]:
        vector = found.get("embedding")
        d = round(distance(vector, base_vector), 4) if vector is not None and base_vector is not None else None
        entry: dict[str, Any] = {"faces": int(found.get("faces", 0)), "distance": d}
        if found.get("error"):
            entry["error"] = found["error"]
        return entry

    record: dict[str, Any] = {
        "version": VERSION,
        "base": {k: base[k] for k in ("faces", "embedding", "box", "score", "error") if k in base},
        "images": [against_base(v) for v in variations],
    }
    if reference is not None:
        record["reference"] = against_base(reference)
    return record


# --- review: per persona and per task ------------------------------------------------------------------------


def score_persona(record: Mapping[str, Any], th: Thresholds) -> tuple[list[str], dict[str, Any], dict[str, Any]]:
    """Flags, flag details and the identity summary of one persona's stored record."""
    flags: list[str] = []
    details: dict[str, Any] = {}
    base_faces = int((record.get("base") or {}).get("faces", 0))
    images = list(record.get("images") or [])
    if base_faces == 0:
        flags.append(FLAG_NO_FACE)
    elif base_faces > 1:
        flags.append(FLAG_SEVERAL_FACES)
        details[FLAG_SEVERAL_FACES] = base_faces
    wrong = [{"image": i, "faces": int(e.get("faces", 0))} for i, e in enumerate(images) if e.get("faces") != 1]
    if wrong:
        flags.append(FLAG_GRID_FACES)
        details[FLAG_GRID_FACES] = wrong
    distances = [e.get("distance") for e in images]
    scored = base_faces > 0 and bool(images)
    summary: dict[str, Any] = {
        "base_faces": base_faces,
        "faces": [int(e.get("faces", 0)) for e in images],
        "distances": distances,
        "score": None,
        "worst": None,
        "threshold": th.same_person,
    }
    if scored:
        measured = [d for d in distances if d is not None]
        within = sum(1 for d in measured if d <= th.same_person)
        summary["score"] = round(within / len(images), 3)  # a variation without a face does not count as within
        summary["worst"] = max(measured) if measured else None
        far = [{"image": i, "distance": d} for i, d in enumerate(distances) if d is not None and d > th.same_person]
        if far:
            flags.append(FLAG_INCONSISTENT)
            details[FLAG_INCONSISTENT] = far
    reference = record.get("reference")
    if reference is not None:
        summary["leakage_distance"] = reference.get("distance")
        summary["reference_faces"] = reference.get("faces")
        if reference.get("distance") is not None and reference["distance"] < th.leakage:
            flags.append(FLAG_LEAKAGE)
            details[FLAG_LEAKAGE] = reference["distance"]
    return flags, details, summary


def duplicate_pairs(bases: Mapping[int, Sequence[float]], threshold: float) -> list[tuple[int, int, float]]:
    """Pairs of personas whose base embeddings are within ``threshold`` (all pairs, vectorised)."""
    ids = sorted(bases)
    if len(ids) < 2:
        return []
    matrix = np.asarray([bases[i] for i in ids], dtype=np.float64)
    norms = (matrix**2).sum(axis=1)
    out: list[tuple[int, int, float]] = []
    for start in range(0, len(ids), 512):  # blocks of rows: a 512 x N distance matrix at a time
        block = matrix[start : start + 512]
        # |a - b|² = |a|² + |b|² - 2 a·b: one matrix product, no 512 x N x 128 difference array
        d = np.sqrt(np.maximum(norms[start : start + 512, None] + norms[None, :] - 2.0 * (block @ matrix.T), 0.0))
        rows, cols = np.nonzero(d < threshold)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            a = start + r
            if a < c:
                out.append((ids[a], ids[c], round(float(d[r, c]), 4)))
    return out


def histogram(values: Iterable[float]) -> dict[str, list[float] | list[int]]:
    """Counts of distances in bins of 0.05 from 0 to 1.2 (the last bin takes everything above)."""
    counts = [0] * (len(HISTOGRAM_EDGES) - 1)
    for v in values:
        i = min(int(v / 0.05), len(counts) - 1) if v >= 0 else 0
        counts[i] += 1
    return {"edges": list(HISTOGRAM_EDGES), "counts": counts}


@dataclass
class TaskIdentity:
    per_persona: dict[int, dict[str, Any]]  # id -> {"flags", "details", "identity"}
    summary: dict[str, Any]


def review_identity(records: Mapping[int, Mapping[str, Any] | None], th: Thresholds,
                    expected: int | None = None) -> TaskIdentity:
    """Score every analysed persona, find duplicate identities and summarise the task.

    ``records`` maps persona ids to their stored record (None: not analysed); ``expected`` is how many completed
    personas there are (to report any that could not be analysed).
    """
    per: dict[int, dict[str, Any]] = {}
    bases: dict[int, Sequence[float]] = {}
    all_distances: list[float] = []
    scores: list[float] = []
    for pid, record in records.items():
        if not record:
            continue
        flags, details, summary = score_persona(record, th)
        per[pid] = {"flags": flags, "details": details, "identity": summary}
        vector = (record.get("base") or {}).get("embedding")
        if vector is not None:
            bases[pid] = vector
        all_distances.extend(d for d in summary["distances"] if d is not None)
        if summary["score"] is not None:
            scores.append(summary["score"])
    for a, b, d in duplicate_pairs(bases, th.duplicate):
        for pid, other in ((a, b), (b, a)):
            entry = per[pid]
            if FLAG_DUPLICATE not in entry["flags"]:
                entry["flags"].append(FLAG_DUPLICATE)
            entry["details"].setdefault(FLAG_DUPLICATE, []).append({"with": other, "distance": d})
            entry["identity"].setdefault("duplicates", []).append(other)
    counts = {flag: sum(1 for e in per.values() if flag in e["flags"]) for flag in IDENTITY_FLAGS}
    summary = {
        "model": MODEL,
        "thresholds": th.as_dict(),
        "personas_analysed": len(per),
        "personas_not_analysed": max(0, (expected if expected is not None else len(records)) - len(per)),
        "personas_scored": len(scores),
        "mean_score": round(sum(scores) / len(scores), 3) if scores else None,
        "variations_measured": len(all_distances),
        "variations_within": sum(1 for d in all_distances if d <= th.same_person),
        "flags": {k: v for k, v in counts.items() if v},
        "duplicate_pairs": sum(len(e["details"].get(FLAG_DUPLICATE, [])) for e in per.values()) // 2,
        "histogram": histogram(all_distances),
    }
    return TaskIdentity(per, summary)


if __name__ == "__main__":
    serve()
