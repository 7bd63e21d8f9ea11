"""Dataset quality checks, recorded per persona and summarised per task.

- bios over the platforms' length limits (X 160, Instagram 150, TikTok 80 characters);
- duplicate names and near-duplicate bios (MinHash over character shingles, via datasketch);
- the bios' language against the requested one (the lingua detector, in ``language``);
- near-duplicate images across the task (perceptual hash, via imagehash);
- grids that had to be asked for again because they were not 2x2 (from the image stage's records).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.core.images import image_hash
from pipeline.stages.review.language import LANGUAGE_CODES, most_likely_language

PLATFORM_LIMITS: dict[str, int] = {"bio_x": 160, "bio_instagram": 150, "bio_tiktok": 80}
NEAR_DUPLICATE_BIO = 0.85  # Jaccard similarity of 5-character shingles
NEAR_DUPLICATE_IMAGE_BITS = 4  # Hamming distance between 64-bit perceptual hashes
LANGUAGE_MIN_PROBABILITY = 0.80
MAX_DETAILS_PER_FLAG = 5
MIN_TEXT_FOR_LANGUAGE = 40


@dataclass(frozen=True)
class PersonaInput:
    """What the checks read of one persona."""

    id: int
    firstname: str
    lastname: str
    bios: Mapping[str, str | None]
    about: str | None = None
    image_bytes: Sequence[bytes] = ()  # thumbnails are enough for perceptual hashing
    grid_retries: int = 0
    image_hashes: Sequence[int] | None = None  # the perceptual hashes when already known (then no image_bytes)


def bios_text(bios: Mapping[str, str | None]) -> str:
    return " ".join(v for v in bios.values() if v)


def language_text(bios: Mapping[str, str | None], about: str | None) -> str:
    """The text whose language is checked: the bios and the about text."""
    return " ".join([bios_text(bios), about or ""])


@dataclass
class QualityReport:
    per_persona: dict[int, dict[str, Any]] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


def bio_length_flags(bios: Mapping[str, str | None]) -> list[str]:
    return [f"{key}_too_long" for key, limit in PLATFORM_LIMITS.items() if len(bios.get(key) or "") > limit]


def shingles(text: str, k: int = 5) -> set[str]:
    cleaned = " ".join(text.casefold().split())
    return {cleaned[i : i + k] for i in range(max(1, len(cleaned) - k + 1))} if cleaned else set()


def near_duplicate_texts(texts: Mapping[int, str], threshold: float = NEAR_DUPLICATE_BIO) -> list[tuple[int, int, float]]:
    """Pairs of ids whose texts are near-duplicates (MinHash LSH candidates, confirmed by exact Jaccard)."""
    from datasketch import MinHash, MinHashLSH  # imports scipy (~1 s): only for the processes that run a review

    lsh = MinHashLSH(threshold=threshold, num_perm=128)
    sets = {i: shingles(t) for i, t in texts.items() if t and t.strip()}
    hashes = {}
    for i, s in sets.items():
        m = MinHash(num_perm=128, seed=1)
        m.update_batch([x.encode() for x in s])
        hashes[i] = m
        lsh.insert(str(i), m)
    pairs = set()
    for i, m in hashes.items():
        for other in lsh.query(m):
            j = int(other)
            if j != i:
                a, b = sorted((i, j))
                pairs.add((a, b))
    out = []
    for a, b in sorted(pairs):
        jaccard = len(sets[a] & sets[b]) / len(sets[a] | sets[b])
        if jaccard >= threshold:
            out.append((a, b, round(jaccard, 3)))
    return out


def detect_language(text: str) -> tuple[str, float] | None:
    """(ISO 639-1 code, confidence) of a text's most likely language, or None when it is too short to tell."""
    if len(text.strip()) < MIN_TEXT_FOR_LANGUAGE:
        return None
    return most_likely_language(text)


def warm_up() -> None:
    """Load what a task's review needs (datasketch with scipy, the language models: about 0.7 s of one core) before
    a worker claims its first task, rather than in the middle of that task."""
    near_duplicate_texts({0: "an urban cyclist in Lisbon", 1: "an urban cyclist in Porto"})
    detect_language("An urban cyclist who writes about the bike lanes of Lisbon every week.")


def near_duplicate_images(
    hashes: Mapping[tuple[int, int], int], max_bits: int = NEAR_DUPLICATE_IMAGE_BITS, examples: int = 3
) -> dict[tuple[int, int], list[tuple[tuple[int, int], int]]]:
    """For each image (persona id, index), up to ``examples`` images of OTHER personas within ``max_bits``.

    Identical hashes are grouped first; distinct hashes are compared only when they share one of ``max_bits + 1``
    bands (pigeonhole: within ``max_bits`` they agree exactly on at least one band), so a dataset full of
    look-alike images costs linear, not quadratic, time.
    """
    groups: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for key, h in hashes.items():
        groups[h].append(key)
    bands = max_bits + 1
    width = 64 // bands
    buckets: dict[tuple[int, int], list[int]] = defaultdict(list)
    for h in groups:
        for b in range(bands):
            buckets[(b, (h >> (b * width)) & ((1 << width) - 1))].append(h)
    near: dict[int, dict[int, int]] = defaultdict(dict)  # hash -> {near hash: distance}, including itself
    for h in groups:
        near[h][h] = 0
    for members in buckets.values():
        for i, a in enumerate(members[:200]):  # a huge bucket of distinct near hashes: sample, stay bounded
            for c in members[i + 1 : 200]:
                if c not in near[a]:
                    distance = bin(a ^ c).count("1")
                    if distance <= max_bits:
                        near[a][c] = distance
                        near[c][a] = distance
    out: dict[tuple[int, int], list[tuple[tuple[int, int], int]]] = {}
    for h, keys in groups.items():
        for key in keys:
            found: list[tuple[tuple[int, int], int]] = []
            for other_hash, distance in sorted(near[h].items(), key=lambda kv: kv[1]):
                for other in groups[other_hash]:
                    if other[0] != key[0]:
                        found.append((other, distance))
                        if len(found) >= examples:
                            break
                if len(found) >= examples:
                    break
            if found:
                out[key] = found
    return out


def check_task(
    personas: Iterable[PersonaInput], language: str, *, languages: Mapping[str, tuple[str, float] | None] | None = None
) -> QualityReport:
    """Run every check; returns per-persona flags/details and a task summary. ``languages``: detections already
    made (``detect_language`` by ``language_text``), e.g. while the images were being made."""
    people = list(personas)
    report = QualityReport({p.id: {"flags": [], "details": {}} for p in people})

    def flag(pid: int, name: str, detail: Any = None) -> None:
        entry = report.per_persona[pid]
        if name not in entry["flags"]:
            entry["flags"].append(name)
        if detail is not None:
            details = entry["details"].setdefault(name, [])
            if len(details) < MAX_DETAILS_PER_FLAG:
                details.append(detail)

    names: dict[str, list[int]] = defaultdict(list)
    for p in people:
        names[" ".join(f"{p.firstname} {p.lastname}".casefold().split())].append(p.id)
        for f in bio_length_flags(p.bios):
            flag(p.id, f)
        if p.grid_retries:
            flag(p.id, "grid_retried", p.grid_retries)
    for ids in names.values():
        if len(ids) > 1:
            for pid in ids:
                flag(pid, "duplicate_name", [i for i in ids if i != pid])

    texts = {p.id: bios_text(p.bios) for p in people}
    for a, b, sim in near_duplicate_texts(texts):
        flag(a, "near_duplicate_bio", {"with": b, "similarity": sim})
        flag(b, "near_duplicate_bio", {"with": a, "similarity": sim})

    expected = LANGUAGE_CODES.get(language)
    if expected:
        known = languages or {}
        for p in people:
            text = language_text(p.bios, p.about)
            detected = known[text] if text in known else detect_language(text)
            if detected and detected[0] != expected and detected[1] >= LANGUAGE_MIN_PROBABILITY:
                flag(p.id, "language_mismatch", {"expected": expected, "detected": detected[0], "p": round(detected[1], 2)})

    hashes = {
        (p.id, i): h
        for p in people
        for i, h in enumerate(p.image_hashes if p.image_hashes is not None else map(image_hash, p.image_bytes))
    }
    for (pid, index), matches in near_duplicate_images(hashes).items():
        flag(pid, "near_duplicate_image", {"image": index, "like": [[o[0], o[1], d] for o, d in matches]})

    counts: dict[str, int] = defaultdict(int)
    for entry in report.per_persona.values():
        for name in entry["flags"]:
            counts[name] += 1
    report.summary = {
        "personas": len(people),
        "flagged": sum(1 for e in report.per_persona.values() if e["flags"]),
        "flags": dict(sorted(counts.items())),
        "language_checked": bool(expected),
        "thresholds": {
            "near_duplicate_bio_jaccard": NEAR_DUPLICATE_BIO,
            "near_duplicate_image_bits": NEAR_DUPLICATE_IMAGE_BITS,
            "language_min_probability": LANGUAGE_MIN_PROBABILITY,
            "platform_limits": PLATFORM_LIMITS,
        },
    }
    return report
