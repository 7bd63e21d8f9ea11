"""Demographic targets: validation, exact per-persona slots, and the requested-vs-achieved report.

Targets (all optional)::

    {"gender": {"f": 0.5, "m": 0.4, "other": 0.1},
     "age": {"min": 25, "max": 40}  or  {"bands": [{"min": 18, "max": 29, "share": 0.5}, ...]},
     "ethnicity": {"White": 0.5, "Black": 0.25, "Asian": 0.25},
     "locales": ["pt_PT", "pt_BR"]}

Shares are normalised. Slots are allocated exactly (largest remainder), then shuffled with the task seed, so
persona *i* of a task always gets the same slot. The offline provider honours slots exactly; LLM providers
receive them in each batch request.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from pipeline.core.domain import GENDERS
from pipeline.core.errors import ValidationError

MAX_CATEGORIES = 50
MAX_SHARE = 1_000_000_000  # shares are relative weights; a bound keeps their sum a finite float
MAX_TARGETS_CHARS = 20_000  # 50 categories of 100-character names, 20 age bands and every locale fit easily


def load_targets_json(text: str) -> dict[str, Any]:
    """The JSON object of targets written as text, not yet validated (``parse_targets`` does that).

    ``ValidationError`` with a message a user can act on for anything else: not JSON, not an object, longer
    than ``MAX_TARGETS_CHARS``, nested deeper than Python's decoder goes (``RecursionError``), or an integer too
    long to read (``int()`` refuses 4,300 digits with a ``ValueError`` that is no ``JSONDecodeError``)."""
    if len(text) > MAX_TARGETS_CHARS:
        raise ValidationError(f"targets are {len(text):,} characters; the limit is {MAX_TARGETS_CHARS:,}")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationError(f"targets are not valid JSON: {exc.msg} at line {exc.lineno}") from None
    except ValueError:
        raise ValidationError("targets are not valid JSON: a number is too long") from None
    except RecursionError:
        raise ValidationError("targets are not valid JSON: nested too deeply") from None
    if not isinstance(value, dict):
        raise ValidationError("targets must be a JSON object")
    return value


def _share(value: object, what: str) -> float:
    """A share as a float; an int is compared before any conversion (``float(10**400)`` overflows)."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_SHARE:
        return float(value)
    if isinstance(value, float) and math.isfinite(value) and 0 <= value <= MAX_SHARE:
        return value
    raise ValidationError(f"targets.{what} must be a non-negative number up to {MAX_SHARE:,}")


def _shares(value: object, what: str, allowed: Sequence[str] | None = None) -> dict[str, float]:
    if not isinstance(value, Mapping) or not value:
        raise ValidationError(f"targets.{what} must be an object of category → share")
    if len(value) > MAX_CATEGORIES:
        raise ValidationError(f"targets.{what} has more than {MAX_CATEGORIES} categories")
    out: dict[str, float] = {}
    for key, share in value.items():
        name = str(key).strip()
        if allowed is not None and name not in allowed:
            raise ValidationError(f"targets.{what}: unknown category {name!r}; use {', '.join(allowed)}")
        if not name or len(name) > 100:
            raise ValidationError(f"targets.{what}: category names must be 1–100 characters")
        out[name] = _share(share, f"{what}.{name}")
    total = sum(out.values())
    if total <= 0:
        raise ValidationError(f"targets.{what}: the shares add up to zero")
    return {k: v / total for k, v in out.items()}


def _age(value: object) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ValidationError("targets.age must be an object with min/max or bands")

    def bound(v: object, what: str) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not 13 <= v <= 100:
            raise ValidationError(f"targets.age {what} must be a whole number from 13 to 100")
        return v

    if "bands" in value:
        bands = value["bands"]
        if not isinstance(bands, list) or not bands or len(bands) > 20:
            raise ValidationError("targets.age.bands must be a list of 1–20 bands")
        parsed = []
        for band in bands:
            if not isinstance(band, Mapping):
                raise ValidationError("each age band needs min, max and share")
            lo, hi = bound(band.get("min"), "min"), bound(band.get("max"), "max")
            if lo > hi:
                raise ValidationError(f"age band {lo}–{hi}: min is above max")
            parsed.append({"min": lo, "max": hi, "share": band.get("share", 1)})
        shares = _shares({f"{b['min']}-{b['max']}": b["share"] for b in parsed}, "age.bands")
        return {"bands": [{"min": b["min"], "max": b["max"], "share": shares[f"{b['min']}-{b['max']}"]} for b in parsed]}
    lo, hi = bound(value.get("min", 18), "min"), bound(value.get("max", 80), "max")
    if lo > hi:
        raise ValidationError(f"targets.age: min {lo} is above max {hi}")
    return {"min": lo, "max": hi}


def parse_targets(raw: object) -> dict[str, Any] | None:
    """Validate targets given as a dict or JSON text; None/empty means no targets."""
    if raw is None or raw == "" or raw == {}:
        return None
    if isinstance(raw, str):
        raw = load_targets_json(raw)
    if not isinstance(raw, Mapping):
        raise ValidationError("targets must be a JSON object")
    unknown = set(raw) - {"gender", "age", "ethnicity", "locales"}
    if unknown:
        raise ValidationError(f"unknown target(s) {', '.join(sorted(unknown))}; use gender, age, ethnicity, locales")
    out: dict[str, Any] = {}
    if "gender" in raw:
        out["gender"] = _shares(raw["gender"], "gender", GENDERS)
    if "ethnicity" in raw:
        out["ethnicity"] = _shares(raw["ethnicity"], "ethnicity")
    if "age" in raw:
        out["age"] = _age(raw["age"])
    if "locales" in raw:
        locales = raw["locales"]
        if not isinstance(locales, list) or not locales or not all(isinstance(x, str) and x for x in locales):
            raise ValidationError("targets.locales must be a non-empty list of locale names such as pt_PT")
        from faker.config import AVAILABLE_LOCALES  # deferred: Faker's locale table is only needed here

        bad = [x for x in locales if x not in AVAILABLE_LOCALES]
        if bad:
            raise ValidationError(f"unknown locale(s) {', '.join(bad[:5])}")
        out["locales"] = {x: 1 / len(locales) for x in locales}
    return out or None


def exact_counts(shares: Mapping[str, float], n: int) -> dict[str, int]:
    """Largest-remainder apportionment: counts that sum to n and follow the shares as closely as possible."""
    raw = {k: v * n for k, v in shares.items()}
    counts = {k: math.floor(v) for k, v in raw.items()}
    rest = n - sum(counts.values())
    for key in sorted(raw, key=lambda k: (-(raw[k] - counts[k]), k))[:rest]:
        counts[key] += 1
    return counts


def _column(values: dict[str, int], rng: random.Random) -> list[str]:
    column = [k for k, c in values.items() for _ in range(c)]
    rng.shuffle(column)
    return column


def allocate_slots(targets: Mapping[str, Any] | None, n: int, seed: int) -> list[dict[str, Any]]:
    """One slot per persona (empty dicts without targets), exact to the requested mix."""
    slots: list[dict[str, Any]] = [{} for _ in range(n)]
    if not targets:
        return slots
    rng = random.Random(seed)
    for key in ("gender", "ethnicity", "locales"):
        if key in targets:
            name = "locale" if key == "locales" else key
            for slot, value in zip(slots, _column(exact_counts(targets[key], n), rng), strict=True):
                slot[name] = value
    age = targets.get("age")
    if age:
        if "bands" in age:
            bands = {f"{b['min']}-{b['max']}": b for b in age["bands"]}
            shares = {k: b["share"] for k, b in bands.items()}
            for slot, band in zip(slots, _column(exact_counts(shares, n), rng), strict=True):
                slot["age_min"], slot["age_max"] = bands[band]["min"], bands[band]["max"]
        else:
            for slot in slots:
                slot["age_min"], slot["age_max"] = age["min"], age["max"]
    return slots


def achieved_report(targets: Mapping[str, Any] | None, personas: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Requested vs achieved per target: counts, deviations and a chi-square goodness-of-fit test."""
    if not targets:
        return {}
    n = len(personas)
    report: dict[str, Any] = {"personas": n}

    def compare(name: str, shares: Mapping[str, float], observed: Counter[str]) -> dict[str, Any]:
        expected = {k: shares[k] * n for k in shares}
        other = sum(c for k, c in observed.items() if k not in shares)
        rows = [
            {"category": k, "requested_share": round(shares[k], 4), "expected": round(expected[k], 2),
             "achieved": observed.get(k, 0), "deviation": round(observed.get(k, 0) - expected[k], 2)}
            for k in shares
        ]
        return {"rows": rows, "outside_targets": other, **_chi_square(expected, observed)}

    if "gender" in targets:
        report["gender"] = compare("gender", targets["gender"], Counter(str(p.get("gender")) for p in personas))
    if "ethnicity" in targets:
        report["ethnicity"] = compare("ethnicity", targets["ethnicity"], Counter(str(p.get("ethnicity")) for p in personas))
    age = targets.get("age")
    if age:
        ages = [p.get("age") for p in personas]
        if "bands" in age:
            labels = {f"{b['min']}-{b['max']}": b for b in age["bands"]}
            observed: Counter[str] = Counter()
            for a in ages:
                for label, band in labels.items():
                    if isinstance(a, int) and band["min"] <= a <= band["max"]:
                        observed[label] += 1
                        break
                else:
                    observed["outside"] += 1
            report["age"] = compare("age", {k: b["share"] for k, b in labels.items()}, observed)
        else:
            inside = sum(1 for a in ages if isinstance(a, int) and age["min"] <= a <= age["max"])
            report["age"] = {"range": [age["min"], age["max"]], "inside": inside, "outside": n - inside}
    return report


def _chi_square(expected: Mapping[str, float], observed: Mapping[str, int]) -> dict[str, Any]:
    cats = [k for k, e in expected.items() if e > 0]
    if len(cats) < 2:
        return {"chi2": None, "p_value": None}
    from scipy.stats import chisquare  # deferred: scipy takes about a second to import

    obs = [observed.get(k, 0) for k in cats]
    exp = [expected[k] for k in cats]
    scale = sum(obs) / sum(exp) if sum(exp) else 1.0  # compare the mix among personas inside the categories
    if sum(obs) == 0:
        return {"chi2": None, "p_value": None}
    stat, p = chisquare(obs, [e * scale for e in exp])
    return {"chi2": round(float(stat), 4), "p_value": round(float(p), 4)}


def slot_matches(slot: dict[str, Any], persona: dict[str, Any]) -> bool:
    if "gender" in slot and slot["gender"] != persona.get("gender"):
        return False
    if "ethnicity" in slot and str(slot["ethnicity"]).casefold() != str(persona.get("ethnicity") or "").casefold():
        return False
    age = persona.get("age")
    return "age_min" not in slot or (isinstance(age, int) and slot["age_min"] <= age <= slot["age_max"])


def fill_slot(open_slots: list[dict[str, Any]], persona: dict[str, Any]) -> None:
    """Mark the slot a stored persona fills (an exact match if any, else the oldest open one)."""
    if not open_slots:
        return
    for i, slot in enumerate(open_slots):
        if slot_matches(slot, persona):
            del open_slots[i]
            return
    del open_slots[0]
