"""Validation and normalisation of one persona as any provider returns it.

A wrong field is repaired or dropped (gender folded to ``m``/``f``/``other``, age to an int in 13–100 or
None, text clipped to the column sizes); only a persona without a usable name is rejected.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping
from typing import Any

from pipeline.core.domain import PERSONA_FIELDS, PersonaDraft

MIN_AGE, MAX_AGE = 13, 100
_AGE_NUMBER = re.compile(r"(\d+)(?:\.\d+)?")

# Column sizes of generation_results (seed schema); Text columns get a generous cap of our own.
FIELD_LIMITS: dict[str, int] = {
    "firstname": 100,
    "lastname": 100,
    "gender": 10,
    "ethnicity": 100,
    "current_city": 255,
    "current_state": 255,
    "prev_city": 255,
    "prev_state": 255,
}
TEXT_LIMIT = 5000

_MALE = {"m", "male", "man", "boy", "masculine", "homme", "masculino", "hombre", "mann", "männlich", "maschio", "uomo"}
_FEMALE = {
    "f", "female", "woman", "girl", "feminine", "femme", "femenino", "femenina", "mujer", "frau", "weiblich",
    "femmina", "donna", "w",
}

# Aliases of the nested ``bios`` object (and of top-level keys) to our column names.
_ALIASES: dict[str, str] = {
    "first_name": "firstname",
    "firstName": "firstname",
    "given_name": "firstname",
    "last_name": "lastname",
    "lastName": "lastname",
    "surname": "lastname",
    "family_name": "lastname",
    "facebook_bio": "bio_facebook",
    "instagram_bio": "bio_instagram",
    "x_bio": "bio_x",
    "twitter_bio": "bio_x",
    "tiktok_bio": "bio_tiktok",
    "job": "job_title",
    "occupation": "job_title",
    "employer": "workplace",
    "company": "workplace",
    "school": "edu_establishment",
    "university": "edu_establishment",
    "education": "edu_establishment",
    "field_of_study": "edu_study",
    "study": "edu_study",
    "city": "current_city",
    "state": "current_state",
    "previous_city": "prev_city",
    "previous_state": "prev_state",
    "bio": "about",
}


def normalise_gender(value: Any) -> str:
    """``m``, ``f`` or ``other``. Non-binary and unknown values are ``other`` — never folded into female."""
    text = str(value or "").strip().casefold()
    if text in _MALE:
        return "m"
    if text in _FEMALE:
        return "f"
    return "other"


def normalise_age(value: Any) -> int | None:
    """An int in 13–100, or None. Accepts numbers, numeric strings and text like "34 years old".

    Never raises: a model may write ``1e400``, ``Infinity`` or a 400-digit number (``float()`` of a huge int
    and ``round()`` of an infinite float raise ``OverflowError``)."""
    if isinstance(value, bool) or value is None:
        return None
    number: int | float
    if isinstance(value, int):
        number = value  # compared as an int: no conversion that could overflow
    elif isinstance(value, float):
        number = value
    elif isinstance(value, str):
        match = _AGE_NUMBER.search(value)
        if match is None or len(match.group(1).lstrip("0")) > 3:  # four digits or more: out of range anyway
            return None
        number = float(match.group())
    else:
        return None
    if isinstance(number, float):
        if not math.isfinite(number):
            return None
        number = round(number)
    return number if MIN_AGE <= number <= MAX_AGE else None


def clean_text(value: Any, limit: int = TEXT_LIMIT) -> str | None:
    """Text with control characters removed and whitespace trimmed, clipped to ``limit``; None when empty."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, list | tuple):
        # Only the scalars of a list: str() of a nested container recurses (a deep one raises RecursionError).
        value = ", ".join(_scalar_text(v) for v in value if isinstance(v, str | int | float) and not isinstance(v, bool))
    elif isinstance(value, str | int | float):
        value = _scalar_text(value)
    else:
        return None  # an object (or anything else) is not a text field
    text = "".join(ch for ch in value if ch in "\n\t" or unicodedata.category(ch)[0] != "C").strip()
    if not text or text.casefold() in {"null", "none", "n/a"}:
        return None
    return text[:limit]


def _scalar_text(value: str | int | float) -> str:
    """The text of a scalar field value; an int too long for ``str()`` (4,300 digits) is cut to a marker."""
    if isinstance(value, int) and value.bit_length() > 10_000:
        return "(a number too long to show)"
    return str(value)


def flatten_persona(obj: Mapping[str, Any], bios: Mapping[str, Any] | None) -> dict[str, Any]:
    """Top-level fields and the fields of ``bios`` merged under our column names (top level wins)."""
    merged: dict[str, Any] = {}
    for source in (bios or {}, obj):
        for key, value in source.items():
            if key == "bios":
                continue
            name = _ALIASES.get(key, key)
            if name in PERSONA_FIELDS and (name not in merged or (source is obj and value not in (None, ""))):
                merged[name] = value
    return merged


def normalise_persona(fields: Mapping[str, Any]) -> PersonaDraft:
    """A ``PersonaDraft`` from flattened fields; ``ValueError`` when first or last name is missing."""
    values: dict[str, Any] = {}
    for name in PERSONA_FIELDS:
        raw = fields.get(name)
        if name == "gender":
            values[name] = normalise_gender(raw)
        elif name == "age":
            values[name] = normalise_age(raw)
        else:
            values[name] = clean_text(raw, FIELD_LIMITS.get(name, TEXT_LIMIT))
    for name in ("firstname", "lastname"):
        if not values[name] or "\n" in values[name]:
            raise ValueError(f"missing or invalid {name}")
    return PersonaDraft(**values)


def name_key(firstname: str | None, lastname: str | None) -> str:
    """The key names are de-duplicated on within a task: case, accents and spacing folded."""
    text = f"{firstname or ''} {lastname or ''}"
    folded = unicodedata.normalize("NFKD", text.casefold())
    folded = "".join(ch for ch in folded if not unicodedata.combining(ch))
    return " ".join(folded.split())
