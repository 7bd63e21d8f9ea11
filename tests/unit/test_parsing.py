"""The robust persona parser and the field normalisation (DESIGN §4 and §9)."""

from __future__ import annotations

import json

import pytest

from pipeline.core.personas import name_key, normalise_age, normalise_gender, normalise_persona
from pipeline.providers.parsing import parse_json_object, personas_from_text


def _obj(first: str, last: str, **extra: object) -> dict[str, object]:
    bios = {"facebook_bio": f"{first} on Facebook", "age": 30, "job_title": "Nurse", "current_city": "Porto"}
    return {"firstname": first, "lastname": last, "gender": "female", "ethnicity": "White", "bios": json.dumps(bios)} | extra


def test_objects_one_after_another_with_bios_as_json_string() -> None:
    text = "\n".join(json.dumps(_obj(f"N{i}", "Silva")) for i in range(3))
    batch = personas_from_text(text)
    assert [p.firstname for p in batch.personas] == ["N0", "N1", "N2"]
    assert batch.personas[0].bio_facebook == "N0 on Facebook" and batch.personas[0].age == 30
    assert batch.rejected == 0


@pytest.mark.parametrize(
    "wrap",
    [
        lambda objs: json.dumps(objs),
        lambda objs: "```json\n" + json.dumps(objs, indent=2) + "\n```",
        lambda objs: "Sure! Here are the personas:\n" + "\n\n".join(json.dumps(o) for o in objs) + "\nHope it helps.",
        lambda objs: json.dumps({"personas": objs}),
        lambda objs: "\n".join(json.dumps(o) for o in objs).replace("}", ",}", 1),  # a trailing comma
    ],
)
def test_wrappers_fences_prose_and_trailing_commas(wrap: object) -> None:
    objs = [_obj("Ana", "Costa"), _obj("Rui", "Lopes", bios={"age": "41 years"})]
    batch = personas_from_text(wrap(objs))  # type: ignore[operator]
    assert [p.firstname for p in batch.personas] == ["Ana", "Rui"]
    assert batch.personas[1].age == 41


def test_broken_pieces_are_counted_and_the_rest_kept() -> None:
    good = json.dumps(_obj("Ana", "Costa"))
    text = good + '\n{"firstname": "No", "lastname": }\n' + json.dumps({"lastname": "Nameless"}) + '\n{"firstname": "Cut", "bi'
    batch = personas_from_text(text)
    assert [p.firstname for p in batch.personas] == ["Ana"]
    assert batch.rejected == 3
    assert len(batch.problems) == 3 and any("cut off" in p for p in batch.problems)


def test_garbage_reply_is_reported_not_raised() -> None:
    batch = personas_from_text("I cannot help with that.")
    assert batch.personas == [] and batch.rejected == 1


def test_wrong_types_are_repaired() -> None:
    obj = {"firstname": "Li", "lastname": "Wei", "gender": "nb", "age": "unknown", "bios": {"x_bio": ["a", "b"], "age": 7}}
    persona = personas_from_text(json.dumps(obj)).personas[0]
    assert persona.gender == "other"  # never folded into female
    assert persona.age is None and persona.bio_x == "a, b"


@pytest.mark.parametrize(
    ("raw", "want"),
    [("M", "m"), ("male", "m"), ("Woman", "f"), ("F", "f"), ("nb", "other"), ("non-binary", "other"), (None, "other")],
)
def test_normalise_gender(raw: object, want: str) -> None:
    assert normalise_gender(raw) == want


@pytest.mark.parametrize(
    ("raw", "want"),
    [(34, 34), ("34", 34), ("34 years old", 34), (34.6, 35), (12, None), (101, None), (True, None), ("", None)],
)
def test_normalise_age(raw: object, want: int | None) -> None:
    assert normalise_age(raw) == want


def test_lengths_are_clipped_to_the_columns() -> None:
    persona = normalise_persona({"firstname": "A" * 300, "lastname": "B", "ethnicity": "x" * 500, "about": "y" * 9000})
    assert len(persona.firstname) == 100 and len(persona.ethnicity or "") == 100 and len(persona.about or "") == 5000


def test_name_key_folds_case_accents_and_spaces() -> None:
    assert name_key("José", " Silva ") == name_key("jose", "SILVA")


def test_parse_json_object_finds_the_object_in_prose() -> None:
    assert parse_json_object('Prompt:\n```json\n{"final_prompt": "at a cafe"}\n```') == {"final_prompt": "at a cafe"}
    with pytest.raises(ValueError):
        parse_json_object("no json here")
