"""Values that cross boundaries between the pipeline, the database layer, providers and pages."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from db.models import GENDERS, PersonaStatus, TaskStatus
from db.queries.settings import MAX_CONCURRENT_TASKS_KEY

# re-exported: the genders, statuses and the cap's setting key live beside the tables and queries
__all__ = ["GENDERS", "MAX_CONCURRENT_TASKS_KEY", "PersonaStatus", "TaskStatus"]

BIO_PLATFORMS: tuple[str, ...] = ("facebook", "instagram", "x", "tiktok")
BIO_PROMPT_KEYS: tuple[str, ...] = tuple(f"bio_prompt_{p}" for p in BIO_PLATFORMS)
CONFIG_TOGGLES: tuple[str, ...] = (
    "randomize_face_base",
    "randomize_face_gender_lock",
    "crop_white_borders",
    "randomize_image_style",
)
IMAGES_PER_BLOCK = 4
ALLOWED_IMAGES_PER_PERSONA: tuple[int, ...] = (4, 8, 12, 16, 20)
MIN_PERSONAS, MAX_PERSONAS = 1, 1000
MAX_DESCRIPTION_CHARS = 4000
PERSONA_BATCH_SIZE = 10
MAX_BATCHES_IN_FLIGHT = 5


@dataclass(frozen=True)
class TaskSpec:
    """A validated request for a task (from the form, the CLI or a re-run)."""

    user_id: int
    description: str
    language: str
    count: int
    images_per_persona: int
    seed: int | None = None
    targets: dict[str, Any] | None = None


@dataclass(frozen=True)
class PersonaDraft:
    """One normalised persona as a provider returns it, before it has a row."""

    firstname: str
    lastname: str
    gender: str
    ethnicity: str | None = None
    age: int | None = None
    bio_facebook: str | None = None
    bio_instagram: str | None = None
    bio_x: str | None = None
    bio_tiktok: str | None = None
    job_title: str | None = None
    workplace: str | None = None
    edu_establishment: str | None = None
    edu_study: str | None = None
    current_city: str | None = None
    current_state: str | None = None
    prev_city: str | None = None
    prev_state: str | None = None
    about: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


PERSONA_FIELDS: tuple[str, ...] = tuple(PersonaDraft.__dataclass_fields__)


@dataclass(frozen=True)
class PersonaRequest:
    """What the data stage asks a persona provider for: one batch."""

    description: str
    language: str
    count: int
    bio_prompts: dict[str, str]
    seed: int
    batch_number: int
    exclude_names: tuple[str, ...] = ()
    slots: tuple[dict[str, Any], ...] = ()  # optional per-persona demographic targets


@dataclass
class PersonaBatch:
    """A provider's answer: the personas it could parse, and what it could not."""

    personas: list[PersonaDraft] = field(default_factory=list)
    rejected: int = 0
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ImageMeta:
    """What is recorded per stored image in ``generation_results.image_meta``."""

    key: str
    thumb_key: str | None
    width: int
    height: int
    format: str
    bytes: int
    block: int
    index: int
    style: dict[str, Any] | None = None
    face_reference: str | None = None
    phash: str | None = None  # the thumbnail's 64-bit perceptual hash, 16 hex digits (older images have none)

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def derive_seed(seed: int, *parts: object) -> int:
    """A stable 63-bit seed for a sub-unit (batch, persona, block), independent of Python's hash()."""
    digest = hashlib.sha256(repr((seed, *parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1
