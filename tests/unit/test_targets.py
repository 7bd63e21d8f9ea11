"""Demographic targets: validation messages, exact apportionment, slots, and the achieved report."""

from __future__ import annotations

from collections import Counter

import pytest

from pipeline.core.errors import ValidationError
from pipeline.core.targets import achieved_report, allocate_slots, exact_counts, parse_targets


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ({"height": {}}, "unknown target"),
        ({"gender": {"x": 1}}, "unknown category"),
        ({"gender": {"f": -1}}, "non-negative"),
        ({"gender": {"f": 0, "m": 0}}, "add up to zero"),
        ({"gender": {"f": True}}, "non-negative"),
        ({"gender": []}, "must be an object"),
        ({"age": {"min": 50, "max": 20}}, "above max"),
        ({"age": {"min": 5, "max": 20}}, "13 to 100"),
        ({"age": {"bands": []}}, "1–20 bands"),
        ({"locales": ["xx_YY"]}, "unknown locale"),
        ({"locales": "pt_PT"}, "non-empty list"),
        # Issue 20, item 8: none of these may escape as anything but a ValidationError.
        ("null", "must be a JSON object"),
        ({"gender": {"f": 10**400}}, "non-negative number up to"),
        ({"gender": {"f": -(10**400)}}, "non-negative number up to"),
        ('{"gender": {"f": 1%s}}' % ("0" * 400), "non-negative number up to"),
        ('{"ethnicity": {"A": 1e400}}', "non-negative number up to"),
        ({"gender": {"f": 1e308, "m": 1e308}}, "non-negative number up to"),  # their sum is infinite
        ({"age": {"bands": [{"min": 20, "max": 30, "share": 10**400}]}}, "non-negative number up to"),
        ({"age": {"min": 10**400, "max": 20}}, "13 to 100"),
        ('{"gender": {"f": %s}}' % ("9" * 5000), "a number is too long"),
        ("[" * 9_000 + "]" * 9_000, "nested too deeply"),
        ('{"age": ' * 2_000 + "1" + "}" * 2_000, "nested too deeply"),
        ("[" * 100_000 + "]" * 100_000, "the limit is 20,000"),
    ],
)
def test_bad_targets_are_explained(raw: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        parse_targets(raw)


def test_empty_targets_mean_none() -> None:
    assert parse_targets(None) is None and parse_targets("") is None and parse_targets({}) is None


@pytest.mark.parametrize(
    ("shares", "n", "expected"),
    [
        ({"f": 0.5, "m": 0.5}, 10, {"f": 5, "m": 5}),
        ({"f": 1 / 3, "m": 1 / 3, "other": 1 / 3}, 10, {"f": 4, "m": 3, "other": 3}),
        ({"a": 0.7, "b": 0.2, "c": 0.1}, 7, {"a": 5, "b": 1, "c": 1}),
        ({"a": 1.0}, 3, {"a": 3}),
    ],
)
def test_exact_counts(shares: dict[str, float], n: int, expected: dict[str, int]) -> None:
    counts = exact_counts(shares, n)
    assert counts == expected and sum(counts.values()) == n


def test_slots_are_exact_and_deterministic() -> None:
    targets = parse_targets({"gender": {"f": 6, "m": 3, "other": 1}, "age": {"bands": [
        {"min": 18, "max": 29, "share": 1}, {"min": 30, "max": 49, "share": 1}]}})
    slots = allocate_slots(targets, 20, seed=3)
    assert Counter(s["gender"] for s in slots) == {"f": 12, "m": 6, "other": 2}
    assert Counter((s["age_min"], s["age_max"]) for s in slots) == {(18, 29): 10, (30, 49): 10}
    assert slots == allocate_slots(targets, 20, seed=3)
    assert slots != allocate_slots(targets, 20, seed=4)


def test_achieved_report_counts_and_tests_fit() -> None:
    targets = parse_targets({"gender": {"f": 1, "m": 1}, "age": {"min": 25, "max": 40}})
    perfect = [{"gender": g, "age": 30} for g in "fm" * 50]
    report = achieved_report(targets, perfect)
    rows = {r["category"]: r for r in report["gender"]["rows"]}
    assert rows["f"]["achieved"] == 50 and rows["f"]["deviation"] == 0
    assert report["gender"]["p_value"] == 1.0
    assert report["age"] == {"range": [25, 40], "inside": 100, "outside": 0}
    skewed = [{"gender": "f", "age": 60}] * 90 + [{"gender": "m", "age": 30}] * 10
    bad = achieved_report(targets, skewed)
    assert bad["gender"]["p_value"] < 0.001
    assert bad["age"]["outside"] == 90
