"""Prices, a call's cost and money as shown (pipeline.core.usage): parametrised tables of pure logic."""

from __future__ import annotations

import pytest

from db.queries.usage import UsageSummary
from pipeline.core.errors import ValidationError
from pipeline.core.usage import (
    Price,
    call_cost,
    format_money,
    parse_price,
    price_key,
    stored_price,
    usage_table,
    usage_total,
)


@pytest.mark.parametrize(("text", "price"), [
    ("per_image=0.04", Price(per_image=0.04)),
    ("per_1k_input=0.00015, per_1k_output=0.0006", Price(per_1k_input=0.00015, per_1k_output=0.0006)),
    (" per_call=$0.01;per_image=0 ", Price(per_call=0.01)),
    ("off", None), ("", None), ("None", None),
])
def test_prices_as_typed(text: str, price: Price | None) -> None:
    assert parse_price(text) == price


def test_a_price_is_stored_in_its_own_words() -> None:
    assert Price(per_1k_input=0.00015, per_image=0.04).text() == "per_image=0.04 per_1k_input=0.00015"
    assert parse_price(Price(per_call=1.5, per_1k_output=2).text()) == Price(per_call=1.5, per_1k_output=2)


def test_a_stored_price_edited_by_hand_prices_nothing_and_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    provider = "image:openai:gpt-image-1.5"
    assert stored_price(provider, "per_image=0.04") == Price(per_image=0.04)
    assert stored_price(provider, None) is None
    with caplog.at_level("WARNING"):
        assert stored_price(provider, "per_image=lots") is None
        assert stored_price(provider, "per_image=lots") is None
    assert caplog.text.count("price:openai:gpt-image-1.5 is not valid") == 1, caplog.text


def test_the_price_of_a_provider_is_per_provider_and_model() -> None:
    assert price_key("persona:openai:gpt-4o-mini") == price_key("prompt:openai:gpt-4o-mini") == \
        "price:openai:gpt-4o-mini"
    assert price_key("persona:openai:llama3:8b") == "price:openai:llama3:8b"


@pytest.mark.parametrize(("ok", "images", "tokens", "expected"), [
    (True, 1, (None, None), (0.05, False)),  # per call + per image; no token price
    (False, 0, (None, None), (0.0, False)),  # a failed call is not billed
    (False, 0, (1000, 0), (0.0, False)),
])
def test_a_calls_cost_without_a_token_price(ok: bool, images: int, tokens: tuple[int | None, int | None],
                                             expected: tuple[float, bool]) -> None:
    price = Price(per_call=0.01, per_image=0.04)
    assert call_cost(price, ok=ok, images=images, input_tokens=tokens[0], output_tokens=tokens[1]) == expected


def test_a_calls_cost_with_a_token_price_never_guesses_the_tokens() -> None:
    price = Price(per_call=0.01, per_1k_input=1.0, per_1k_output=2.0)
    assert call_cost(price, ok=True, images=0, input_tokens=500, output_tokens=250) == (pytest.approx(1.01), False)
    assert call_cost(price, ok=True, images=0, input_tokens=None, output_tokens=None) == (0.01, True)
    assert call_cost(price, ok=False, images=0, input_tokens=100, output_tokens=None) == (pytest.approx(0.1), False)
    assert call_cost(None, ok=True, images=1, input_tokens=5, output_tokens=5) == (None, False)


@pytest.mark.parametrize("bad", ["per_image", "per_image=abc", "per_image=-0.1", "per_image=1001", "per_image=1e2",
                                 "cost=1", "per_image=1 per_image=2", "per_image=NaN"])
def test_bad_prices_say_what_is_wrong(bad: str) -> None:
    with pytest.raises(ValidationError, match="price:x:y"):
        parse_price(bad, "price:x:y")


@pytest.mark.parametrize(("amount", "text"), [
    (None, "—"), (0, "$0.00"), (1.1, "$1.10"), (0.1 * 11, "$1.10"), (0.125, "$0.125"), (0.0042, "$0.0042"),
    (1 / 3, "$0.3333"), (1234.5, "$1,234.50"), (2.000001, "$2.00"),
])
def test_money_as_shown(amount: float | None, text: str) -> None:
    assert format_money(amount) == text


def _summary(**values: object) -> UsageSummary:
    base: dict[str, object] = {"provider": "image:openai:m", "kind": "image", "calls_ok": 3, "calls_failed": 1,
                               "images": 3, "input_tokens": 0, "output_tokens": 0, "tokens_reported": 0,
                               "cost": 0.12, "unpriced_calls": 0, "tokens_unpriced": 0, "seconds": 8.0}
    return UsageSummary(**{**base, **values})  # type: ignore[arg-type]


def test_usage_as_a_table_says_unknown_where_it_is_unknown() -> None:
    row = usage_table([_summary()])[0]
    assert (row["calls ok"], row["calls failed"], row["tokens"], row["s per call"], row["cost"]) == \
        (3, 1, "—", 2.0, "$0.12")
    row = usage_table([_summary(tokens_reported=2, input_tokens=1200, output_tokens=30, tokens_unpriced=2)])[0]
    assert row["tokens"] == "1,200 in / 30 out (2 of 4 calls reported)" and row["cost"] == "≥ $0.12"
    assert usage_table([_summary(cost=None, unpriced_calls=4)])[0]["cost"] == "—"
    assert usage_total([_summary(), _summary(cost=None, unpriced_calls=4)]) == "≥ $0.12"
    assert usage_total([]) == "—"
