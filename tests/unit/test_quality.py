"""Quality checks: platform limits, near-duplicate bios and images, language, duplicate names."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pipeline.stages.review.quality import (
    PersonaInput,
    bio_length_flags,
    check_task,
    detect_language,
    image_hash,
    near_duplicate_images,
    near_duplicate_texts,
)


@pytest.mark.parametrize(
    ("bios", "flags"),
    [
        ({"bio_x": "x" * 160, "bio_instagram": "i" * 150, "bio_tiktok": "t" * 80}, []),
        ({"bio_x": "x" * 161}, ["bio_x_too_long"]),
        ({"bio_instagram": "i" * 151, "bio_tiktok": "t" * 81}, ["bio_instagram_too_long", "bio_tiktok_too_long"]),
        ({"bio_facebook": "f" * 5000}, []),
        ({"bio_x": None}, []),
    ],
)
def test_platform_limits(bios: dict[str, str | None], flags: list[str]) -> None:
    assert bio_length_flags(bios) == flags


def test_near_duplicate_texts() -> None:
    base = "Weekend cyclist in Lisbon, coffee addict, software tester by day and amateur photographer at night."
    texts = {1: base, 2: base.replace("Lisbon", "Lisboa"), 3: "Marathon runner and baker from Porto who loves jazz."}
    pairs = near_duplicate_texts(texts)
    assert [(a, b) for a, b, _ in pairs] == [(1, 2)]
    assert pairs[0][2] >= 0.85


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("I love riding my bike through the city every morning before work, it keeps me sane.", "en"),
        ("Adoro andar de bicicleta pela cidade todas as manhãs antes do trabalho, mantém-me são.", "pt"),
        ("short", None),
    ],
)
def test_detect_language(text: str, code: str | None) -> None:
    detected = detect_language(text)
    assert (detected[0] if detected else None) == code


def _jpeg(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array.astype("uint8")).save(out, "JPEG", quality=90)
    return out.getvalue()


def test_near_duplicate_images_across_personas_only() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (64, 64, 3))
    b = rng.integers(0, 255, (64, 64, 3))
    hashes = {(1, 0): image_hash(_jpeg(a)), (2, 0): image_hash(_jpeg(np.clip(a + 3, 0, 255))),
              (3, 0): image_hash(_jpeg(b)), (1, 1): image_hash(_jpeg(a))}
    found = near_duplicate_images(hashes)
    assert (2, 0) in [other for other, _ in found[(1, 0)]]
    assert all(other[0] != key[0] for key, matches in found.items() for other, _ in matches)  # not within a persona
    assert (3, 0) not in found and all((3, 0) not in [o for o, _ in m] for m in found.values())


def test_near_duplicate_images_stay_linear_for_identical_images() -> None:
    hashes = {(pid, i): 0xABCDEF for pid in range(2000) for i in range(8)}
    found = near_duplicate_images(hashes)
    assert len(found) == 16000 and all(len(m) == 3 for m in found.values())


def test_check_task_flags_and_summary() -> None:
    people = [
        PersonaInput(1, "Ana", "Silva", {"bio_x": "I ride my bike every single day. " * 6,
                                          "bio_facebook": "I cycle to work in Lisbon every day."}),
        PersonaInput(2, "ana", "SILVA", {"bio_facebook": "Baker in Porto who plays jazz saxophone on weekends."}),
        PersonaInput(3, "Rui", "Costa", {"bio_facebook": "Engineer and father of two, runs marathons."}, grid_retries=1),
    ]
    report = check_task(people, "English")
    assert report.per_persona[1]["flags"] == ["bio_x_too_long", "duplicate_name"]
    assert "duplicate_name" in report.per_persona[2]["flags"]
    assert report.per_persona[3]["flags"] == ["grid_retried"]
    assert report.summary["flagged"] == 3
    assert report.summary["flags"]["duplicate_name"] == 2


def test_check_task_flags_bios_in_another_language_than_the_task() -> None:
    english = {"bio_facebook": "I ride my bike to work every morning and take photos of the city at night.",
               "bio_x": "Software tester by day, amateur photographer by night."}
    portuguese = {"bio_facebook": "Ando de bicicleta todas as manhãs e fotografo a cidade ao fim do dia.",
                  "bio_x": "Testador de software de dia, fotógrafo amador à noite."}
    people = [PersonaInput(1, "Ana", "Silva", english), PersonaInput(2, "Rui", "Costa", portuguese)]
    report = check_task(people, "Portuguese (Portugal)")
    assert report.per_persona[1]["flags"] == ["language_mismatch"]
    assert report.per_persona[1]["details"]["language_mismatch"][0]["detected"] == "en"
    assert report.per_persona[2]["flags"] == []
    assert report.summary["language_checked"] is True
    assert check_task(people, "Klingon").summary["language_checked"] is False  # no detector language: unchecked
