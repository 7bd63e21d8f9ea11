"""The identity check's vocabulary: its modes and setting, the thresholds frozen with a task, its flag names.

Pure values: the face analysis itself lives in ``pipeline.stages.review.identity``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

MODEL = "dlib_face_recognition_resnet_model_v1 (5-point alignment, HOG detector)"
VERSION = 1

IDENTITY_MODES = ("auto", "on", "off")
IDENTITY_SETTING_KEY = "identity_check"

# Flags written to a persona's quality flags (and filterable in the gallery).
FLAG_NO_FACE = "no_face"  # no face in the base: identity cannot be scored
FLAG_SEVERAL_FACES = "several_faces"  # more than one face in the base
FLAG_GRID_FACES = "grid_face_count"  # a variation (a grid quadrant) without exactly one face
FLAG_INCONSISTENT = "identity_inconsistent"  # a variation farther than the threshold from the base
FLAG_DUPLICATE = "duplicate_identity"  # another persona of the task has (nearly) the same face
FLAG_LEAKAGE = "face_leakage"  # the base is (nearly) the real library face it was made from
IDENTITY_FLAGS: tuple[str, ...] = (
    FLAG_NO_FACE, FLAG_SEVERAL_FACES, FLAG_GRID_FACES, FLAG_INCONSISTENT, FLAG_DUPLICATE, FLAG_LEAKAGE,
)


@dataclass(frozen=True)
class Thresholds:
    """Embedding distances (Euclidean, 128-d). Frozen with each task and written into export manifests."""

    same_person: float = 0.6  # a variation farther than this from its base shows someone else
    duplicate: float = 0.45  # two personas' bases closer than this share a face (stricter: many pairs per task)
    leakage: float = 0.6  # a base closer than this to its library face reproduces that real person

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Thresholds:
        data = data or {}
        defaults = cls()
        return cls(**{k: float(data.get(k, getattr(defaults, k))) for k in ("same_person", "duplicate", "leakage")})


def normalise_mode(mode: str | None) -> str:
    """The stored ``identity_check`` mode; anything unexpected (or nothing) reads as the default, ``auto``."""
    value = (mode or "auto").strip().lower()
    return value if value in IDENTITY_MODES else "auto"


def resolve_mode(mode: str | None, image_provider: str) -> bool:
    """Whether the check runs: ``auto`` (the default) means on for real image providers, off for offline."""
    value = normalise_mode(mode)
    if value == "auto":
        return image_provider != "offline"
    return value == "on"


def snapshot(mode: str | None, image_provider: str) -> dict[str, Any]:
    """What a task freezes about the check at submit time."""
    return {
        "enabled": resolve_mode(mode, image_provider),
        "mode": normalise_mode(mode),
        "model": MODEL,
        "thresholds": Thresholds().as_dict(),
    }
