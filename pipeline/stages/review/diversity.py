"""A task's diversity figures, computed once at review time and stored with the task (``diversity``): how
varied its bios, names and faces are, each figure with one line saying how to read it, and, where the identity
check ran, the verification curves face-dataset papers report (same-person and different-person distance
histograms, the equal-error rate, the share of different-persona base pairs above the same-person threshold).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from db.models import GenerationResult
from pipeline.core import similarity as sim
from pipeline.core.identity import Thresholds
from pipeline.stages.context import TaskContext
from pipeline.stages.review.identity_lane import is_current

VENDI_LIMIT = 1_000  # a Vendi score needs an n x n eigendecomposition: a seeded sample above this
DIFFERENT_PAIRS_GOAL = 0.99  # share of different-persona base pairs that should be above the threshold

READINGS: dict[str, tuple[str, str]] = {
    "bio_vendi": ("Vendi score of bios",
                  "effective number of distinct bios (TF-IDF cosine): 1 = all alike, up to the number of personas"),
    "bio_mean_distance": ("mean pairwise bio distance",
                          "1 - cosine similarity of TF-IDF vectors, averaged over pairs: 0 = identical, 1 = no word "
                          "in common"),
    "bio_distinct_1": ("distinct-1 of bios", "distinct words / all words: higher means a richer vocabulary"),
    "bio_distinct_2": ("distinct-2 of bios",
                       "distinct word pairs / all word pairs: low values mean bios repeat the same phrases"),
    "unique_names": ("unique full names", "distinct first + last names / personas: 1 = every name differs"),
    "unique_first_names": ("unique first names", "distinct first names / personas"),
    "face_vendi": ("Vendi score of faces",
                   "effective number of distinct faces (base selfies; two faces at the same-person threshold count "
                   "as half alike): close to the number of faces is good"),
    "face_mean_distance": ("mean pairwise face distance",
                           "face-embedding distance between base selfies, averaged over pairs: different people are "
                           "usually above 0.6"),
}


@dataclass
class PersonaText:
    """What the figures read of one persona."""

    firstname: str
    lastname: str
    bio: str
    face: Sequence[float] | None = None  # the base selfie's embedding (identity check), if any
    same_person: Sequence[float] = field(default_factory=list)  # each variation's distance to its base


def _figure(key: str, value: float | None, **extra: Any) -> dict[str, Any]:
    label, reading = READINGS[key]
    return {"label": label, "value": value, "reading": reading, **extra}


def _bio_figures(bios: list[str]) -> dict[str, dict[str, Any]]:
    present = [b for b in bios if b.strip()]
    out = {
        "bio_distinct_1": _figure("bio_distinct_1", sim.distinct_n(present, 1)),
        "bio_distinct_2": _figure("bio_distinct_2", sim.distinct_n(present, 2)),
    }
    if len(present) < 2:
        return out
    vendi_rows = sim.sample_indices(len(present), VENDI_LIMIT)
    matrix = sim.tfidf([present[i] for i in vendi_rows])
    cosine = np.asarray((matrix @ matrix.T).todense())
    np.fill_diagonal(cosine, 1.0)
    out["bio_vendi"] = _figure("bio_vendi", round(sim.vendi_score(cosine), 2), of=len(vendi_rows))
    mean = float(sim.upper_pairs(1.0 - cosine).mean())
    out["bio_mean_distance"] = _figure("bio_mean_distance", round(mean, 4), of=len(vendi_rows))
    return out


def _face_kernel(distances: np.ndarray, threshold: float) -> np.ndarray:
    """Similarity 1 for the same embedding, 0.5 at the same-person threshold, falling off as a Gaussian."""
    return np.asarray(np.exp(-math.log(2.0) * (distances / threshold) ** 2))


def _face_figures(faces: list[Sequence[float]], threshold: float) -> dict[str, dict[str, Any]]:
    if len(faces) < 2:
        return {}
    rows = sim.sample_indices(len(faces), VENDI_LIMIT)
    distances = sim.pairwise_distances(np.asarray([faces[i] for i in rows]))
    return {
        "face_vendi": _figure("face_vendi", round(sim.vendi_score(_face_kernel(distances, threshold)), 2),
                              of=len(rows)),
        "face_mean_distance": _figure("face_mean_distance", round(float(sim.upper_pairs(distances).mean()), 4),
                                      of=len(rows)),
    }


def identity_curves(faces: list[Sequence[float]], same: list[float], threshold: float) -> dict[str, Any] | None:
    """Same-person distances (each variation to its base) and different-person distances (every pair of bases,
    a seeded sample of ``SAMPLE_LIMIT`` bases above that), their histograms, the equal-error rate and the
    share of different-person pairs above ``threshold``. None without both kinds of pair."""
    rows = sim.sample_indices(len(faces))
    different = sim.upper_pairs(sim.pairwise_distances(np.asarray([faces[i] for i in rows]))) if len(rows) > 1 \
        else np.zeros(0)
    if not same or not different.size:
        return None
    above = float((different > threshold).mean())
    return {
        "threshold": threshold,
        "same_person": {"pairs": len(same), "histogram": sim.histogram(same),
                        "reading": "each variation's distance to its own base selfie: should sit below the threshold"},
        "different_person": {"pairs": int(different.size), "bases": len(rows),
                             "histogram": sim.histogram(different),
                             "reading": "distance between two personas' base selfies: should sit above the threshold"},
        "equal_error_rate": {**sim.equal_error_rate(same, different),
                             "reading": "where a threshold mistakes as many same-person pairs for strangers as "
                                        "strangers for the same person: lower is better, 0 = the two never overlap"},
        "different_pairs_above_threshold": {"value": round(above, 4), "goal": DIFFERENT_PAIRS_GOAL,
                                            "met": above >= DIFFERENT_PAIRS_GOAL,
                                            "reading": f"share of different-persona base pairs farther apart than "
                                                       f"{threshold} (goal ≥ {DIFFERENT_PAIRS_GOAL:.0%})"},
    }


def diversity_figures(people: Sequence[PersonaText], threshold: float = sim.SAME_PERSON) -> dict[str, Any]:
    """The task's diversity figures (see the module's description); ``threshold`` is the task's same-person
    distance."""
    figures: dict[str, dict[str, Any]] = {
        "unique_names": _figure("unique_names", sim.unique_share([f"{p.firstname} {p.lastname}" for p in people])),
        "unique_first_names": _figure("unique_first_names", sim.unique_share([p.firstname for p in people])),
    }
    figures |= _bio_figures([p.bio for p in people])
    faces = [p.face for p in people if p.face]
    figures |= _face_figures(faces, threshold)
    out: dict[str, Any] = {"personas": len(people), "faces": len(faces), "figures": figures}
    curves = identity_curves(faces, [d for p in people if p.face for d in p.same_person if d is not None], threshold)
    if curves is not None:
        out["identity"] = curves
    return out


def _bio(row: GenerationResult) -> str:
    return " ".join(t for t in (row.bio_facebook, row.bio_instagram, row.bio_x, row.bio_tiktok, row.about) if t)


def new_bio_terms(rows: Sequence[GenerationResult]) -> dict[int, bytes]:
    """The bio words (``sim.bio_terms``) of each persona that has none stored, by id: counted once, here, so that
    the dataset map only reads them (a persona's bios never change once stored)."""
    return {row.id: sim.bio_terms(_bio(row)) for row in rows if not sim.valid_terms(row.bio_terms)}


def _persona_text(row: GenerationResult) -> PersonaText:
    """What the figures read of a stored persona: its bios and about text, and its face where the identity check
    analysed its current base selfie."""
    bio = _bio(row)
    record = (row.image_meta or {}).get("identity") if is_current(row) else None
    face = ((record or {}).get("base") or {}).get("embedding")
    same = [e.get("distance") for e in (record or {}).get("images") or [] if e.get("distance") is not None]
    return PersonaText(row.firstname or "", row.lastname or "", bio, face=face or None, same_person=same if face else [])


def review_diversity(ctx: TaskContext, rows: Sequence[GenerationResult]) -> dict[str, Any] | None:
    """The task's diversity figures from its stored personas, or None when they could not be computed (never a
    reason to fail the task: the dataset is there)."""
    threshold = Thresholds.from_dict((ctx.snapshot.get("identity") or {}).get("thresholds")).same_person
    try:
        return diversity_figures([_persona_text(r) for r in rows], threshold)
    except (ValueError, ArithmeticError, np.linalg.LinAlgError) as exc:
        ctx.log.warning("diversity figures not computed: %s", exc)
        return None
