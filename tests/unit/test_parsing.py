"""The robust persona parser and the field normalisation (DESIGN §4 and §9)."""

from __future__ import annotations

import json
import time

import pytest

from pipeline.core.personas import name_key, normalise_age, normalise_gender, normalise_persona
from pipeline.providers.parsing import MAX_REPLY_CHARS, parse_json_object, personas_from_text


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


# -- untrusted replies: never an exception, always bounded ------------------------------------------------------
@pytest.mark.parametrize(
    "age",
    ["1e400", "-1e400", "9" * 400, "9" * 5000, '"' + "9" * 400 + '"', '"1e400 years"', "Infinity", "NaN", '"34.' + "5" * 400 + '"'],
    ids=["1e400", "-1e400", "400-digits", "5000-digits", "400-digit-string", "1e400-string", "Infinity", "NaN",
         "long-fraction"],
)
def test_an_absurd_age_is_dropped_not_raised(age: str) -> None:
    text = '{"firstname": "Ana", "lastname": "Costa", "age": ' + age + "}\n" + json.dumps(_obj("Rui", "Lopes"))
    batch = personas_from_text(text)
    assert [p.firstname for p in batch.personas] == ["Ana", "Rui"]
    assert batch.personas[0].age in (None, 35) and batch.personas[1].age == 30  # 34.5… rounds to 35


@pytest.mark.parametrize(
    "raw",
    [10**400, -(10**400), float("inf"), float("nan"), "9" * 400, 2**20000, object()],
    ids=["10**400", "-10**400", "inf", "nan", "400-digit-string", "2**20000", "object"],
)
def test_normalise_age_of_absurd_values_is_none(raw: object) -> None:
    assert normalise_age(raw) is None


@pytest.mark.parametrize(
    ("deep", "reason"),
    [
        ("[" * 100_000 + "]" * 100_000, "nested more than 20 levels"),
        ('{"a": ' * 50_000 + "1" + "}" * 50_000, "nested more than 20 levels"),
        ('{"firstname": "X", "lastname": "Y", "job": ' + "[" * 5_000 + "]" * 5_000 + "}", "nested more than 20 levels"),
        ('{"personas": [' + '{"a": ' * 30 + "1" + "}" * 30 + "]}", "nested more than 20 levels"),
        ("[" * 100_000, "cut off"),  # unclosed: what follows is read as its inside
    ],
    ids=["closed-array", "closed-object", "in-a-field", "just-over-the-limit", "unclosed"],
)
def test_deeply_nested_json_is_one_counted_problem(deep: str, reason: str) -> None:
    text = json.dumps(_obj("Ana", "Costa")) + "\n" + deep + "\n" + json.dumps(_obj("Rui", "Lopes"))
    batch = personas_from_text(text)
    assert [p.firstname for p in batch.personas] == ["Ana", "Rui"]
    assert batch.rejected == 1 and len(batch.problems) == 1 and reason in batch.problems[0]


def test_a_deep_grid_prompt_reply_is_no_object() -> None:
    with pytest.raises(ValueError):
        parse_json_object("[" * 100_000 + "]" * 100_000)


def test_a_text_field_holding_deep_or_huge_values_is_kept_as_text() -> None:
    nested: list[object] = ["a"]
    for _ in range(5_000):  # deeper than str() can print (RecursionError)
        nested = [nested]
    persona = normalise_persona({"firstname": "Ana", "lastname": "Costa", "job_title": ["Nurse", nested, 10**5000],
                                 "about": 10**5000})
    assert persona.job_title is not None and persona.job_title.startswith("Nurse")
    assert persona.about is not None and len(persona.about) <= 5000


def test_many_unclosed_brackets_are_read_in_linear_time() -> None:
    text = '[{"firstname": "Ana", "lastname": "Costa"}, ' + '[x "' * 200_000  # 800 kB, cut off everywhere
    started = time.monotonic()
    batch = personas_from_text(text)
    assert [p.firstname for p in batch.personas] == ["Ana"]
    assert time.monotonic() - started < 20  # generous on a loaded machine; quadratic would take hours


def test_a_reply_past_the_limit_is_read_up_to_it() -> None:
    one = json.dumps(_obj("Ana", "Costa"))
    batch = personas_from_text(one + " " * (MAX_REPLY_CHARS + 10) + json.dumps(_obj("Rui", "Lopes")))
    assert [p.firstname for p in batch.personas] == ["Ana"]
    assert batch.rejected == 1 and any("limit" in p for p in batch.problems)


def test_brackets_hidden_in_ever_new_strings_stop_at_the_scan_budget() -> None:
    # Each bracket here is inside a string for every earlier scan (escaped quotes flip the phase back), so each
    # needs a scan to the end of its own: quadratic (10,000 repeats already take ~40 s) without the budget.
    text = '{"firstname": "Ana", "lastname": "Costa"} ' + '[ "\\" ' * 50_000
    started = time.monotonic()
    batch = personas_from_text(text)
    assert time.monotonic() - started < 20
    assert [p.firstname for p in batch.personas] == ["Ana"]
    assert any("too malformed to read further" in p for p in batch.problems)
