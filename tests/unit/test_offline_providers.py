"""Offline providers: deterministic from the seed, locale from the language, description and slots honoured."""

from __future__ import annotations

import io

from PIL import Image

from pipeline.core.domain import PersonaRequest
from pipeline.core.languages import LANGUAGES, locales_for, normalise_language
from pipeline.core.personas import name_key
from pipeline.providers.offline_images import OfflineImageProvider
from pipeline.providers.offline_personas import OfflinePersonaProvider, OfflinePromptProvider
from pipeline.stages.images.imaging import process_grid


def _request(**overrides: object) -> PersonaRequest:
    values: dict[str, object] = {
        "description": "urban cyclists in Lisbon, 25–40",
        "language": "Portuguese (Portugal)",
        "count": 10,
        "bio_prompts": {},
        "seed": 11,
        "batch_number": 1,
    }
    values.update(overrides)
    return PersonaRequest(**values)  # type: ignore[arg-type]


def test_same_seed_same_personas_other_seed_other_personas() -> None:
    provider = OfflinePersonaProvider()
    first, again = provider.generate(_request()), provider.generate(_request())
    assert first.personas == again.personas and len(first.personas) == 10
    assert provider.generate(_request(seed=12)).personas != first.personas


def test_description_age_range_and_place_are_honoured() -> None:
    personas = OfflinePersonaProvider().generate(_request(count=10)).personas
    assert all(p.age is not None and 25 <= p.age <= 40 for p in personas)
    assert sum(p.current_city == "Lisbon" for p in personas) >= 5
    assert all(len(p.bio_x or "") <= 160 and len(p.bio_instagram or "") <= 150 and len(p.bio_tiktok or "") <= 80
               for p in personas)
    assert len({name_key(p.firstname, p.lastname) for p in personas}) == 10


def test_slots_and_excluded_names_are_honoured() -> None:
    provider = OfflinePersonaProvider()
    first = provider.generate(_request(count=3))
    excluded = tuple(f"{p.firstname} {p.lastname}" for p in first.personas)
    slots = ({"gender": "f", "age_min": 60, "age_max": 70}, {"gender": "m", "ethnicity": "Black"}, {"gender": "other"})
    batch = provider.generate(_request(count=3, exclude_names=excluded, slots=slots))
    assert [p.gender for p in batch.personas] == ["f", "m", "other"]
    assert 60 <= (batch.personas[0].age or 0) <= 70 and batch.personas[1].ethnicity == "Black"
    assert not {f"{p.firstname} {p.lastname}" for p in batch.personas} & set(excluded)


def test_locale_follows_the_language() -> None:
    assert len(LANGUAGES) >= 100
    assert locales_for("Japanese")[0] == "ja_JP" and locales_for("unknown legacy value") == ("en_US",)
    assert normalise_language("portuguese") == "Portuguese (Portugal)" and normalise_language("FRENCH") == "French"
    japanese = OfflinePersonaProvider().generate(_request(language="Japanese", description="students", count=3))
    assert all(any("\u3040" <= ch <= "\u9fff" for ch in p.lastname) for p in japanese.personas)


def test_prompt_provider_avoids_ideas_already_used() -> None:
    provider = OfflinePromptProvider()
    persona = OfflinePersonaProvider().generate(_request(count=1)).personas[0]
    history: list[str] = []
    for block in range(5):
        prompt = provider.grid_prompt(persona, history, seed=block)
        ideas = prompt.split(": ", 1)[1].rstrip(".").split("; ")
        assert not any(idea in " ".join(history) for idea in ideas)
        history.append(prompt)


def test_images_are_deterministic_and_grids_split_into_four() -> None:
    persona = OfflinePersonaProvider().generate(_request(count=1)).personas[0]
    provider = OfflineImageProvider()
    base = provider.generate_base(persona, "prompt", seed=5)
    assert base == provider.generate_base(persona, "prompt", seed=5)
    assert base != provider.generate_base(persona, "prompt", seed=6)
    grid = provider.make_grid(base, "prompt", seed=9)
    assert grid == provider.make_grid(base, "prompt", seed=9)
    with Image.open(io.BytesIO(grid)) as img:
        assert img.getpixel((2, 2)) == (255, 255, 255)  # white gutters around the tiles
    tiles = process_grid(grid, crop_borders=True, randomize=False, seed=1, persona_key="b1-s0", first_index=0)
    assert len(tiles) == 4 and all(abs(t.width - 512) <= 2 and abs(t.height - 512) <= 2 for t in tiles)
    edited = provider.edit_face(base, persona, "prompt", seed=3)
    with Image.open(io.BytesIO(edited)) as img:
        assert img.size == (512, 512)
