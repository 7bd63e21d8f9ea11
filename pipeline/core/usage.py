"""How a provider is named, what its calls cost, and a task's budget (issue 21).

A provider is one kind of call (persona LLM, grid-prompt LLM, image API) with the provider and model a task's
snapshot names: ``kind:provider:model`` (``provider_key``). Its limits are per kind (``db.queries.limits``); its
price is per provider and model (``price_key``: the same chat model costs the same for personas and grid prompts),
set by an administrator as a settings row ``price:<provider>:<model>`` whose value reads like
``per_image=0.04`` or ``per_1k_input=0.00015 per_1k_output=0.0006`` (``parse_price``). Amounts are US dollars.

What a call costs (``call_cost``): a call that succeeded costs its price per call, plus its price per image for
each image it made, plus its prices per 1k input and output tokens for the tokens the provider reported. A call
that failed costs nothing (providers do not bill a refused or failed request) unless the provider reported tokens
for it. Tokens are never guessed: when a token price is set and the provider reported no tokens, the call's cost
leaves them out and says so (``tokens_unpriced``).
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from typing import Any

from db.queries.usage import UsageSummary
from pipeline.core.errors import ValidationError

PRICE_PREFIX = "price:"
PRICE_PARTS = ("per_call", "per_image", "per_1k_input", "per_1k_output")
MAX_PRICE = 1000.0  # dollars per call, image or 1k tokens: anything above is a typo
MAX_BUDGET = 1_000_000.0  # dollars
_OFF_WORDS = {"", "off", "none"}
_AMOUNT = re.compile(r"[0-9]{1,9}(\.[0-9]{1,9})?")
_SEPARATORS = re.compile(r"[\s,;]+")
_warned: set[str | None] = set()  # stored prices already logged as not valid

log = logging.getLogger(__name__)


def provider_key(kind: str, snapshot: dict[str, Any], default_persona: str = "offline",
                 default_image: str = "offline") -> str | None:
    """The provider a task calls for ``kind`` ("persona", "prompt" or "image"), as its snapshot names it:
    ``kind:provider:model`` (``persona:openai:gpt-4o-mini``, ``prompt:flowise:<flow id>``); None for an offline
    provider, which calls no network."""
    names = snapshot.get("providers") or {}
    models = snapshot.get("models") or {}
    if kind == "image":
        name = names.get("image") or default_image
    else:
        name = names.get(kind) or names.get("persona") or default_persona
    if name == "offline":
        return None
    if kind == "image":
        model = models.get("image")
    elif name == "flowise":
        model = models.get("flowise_persona_flow" if kind == "persona" else "flowise_prompt_flow")
    else:
        model = models.get("chat")
    return ":".join(str(part) for part in (kind, name, model) if part)[:255]


def price_key(provider: str) -> str:
    """The settings key of a provider's price: ``price:<provider>:<model>`` for ``kind:provider:model``."""
    return PRICE_PREFIX + provider.split(":", 1)[-1]


@dataclass(frozen=True)
class Price:
    """A provider's price, dollars: per call that succeeded, per image made, per 1k input and output tokens."""

    per_call: float = 0.0
    per_image: float = 0.0
    per_1k_input: float = 0.0
    per_1k_output: float = 0.0

    @property
    def per_token(self) -> bool:
        return bool(self.per_1k_input or self.per_1k_output)

    def fixed(self, images: int) -> float:
        """The part of a call's cost known before it is made: per call and per image."""
        return self.per_call + self.per_image * images

    def text(self) -> str:
        """The stored form, e.g. ``per_image=0.04`` (the parts that are set)."""
        parts = [f"{name}={_amount_text(getattr(self, name))}" for name in PRICE_PARTS if getattr(self, name)]
        return " ".join(parts) or "per_call=0"


def _amount_text(value: float) -> str:
    return f"{value:.9f}".rstrip("0").rstrip(".")


def _amount(text: str, what: str, limit: float, example: str = "0.04") -> float:
    value = text.strip().removeprefix("$")
    if not _AMOUNT.fullmatch(value):
        raise ValidationError(f"{what} must be an amount in dollars like {example}, got {text.strip()[:40]!r}")
    amount = float(value)
    if not math.isfinite(amount) or amount > limit:
        raise ValidationError(f"{what} must be at most {limit:,.0f} dollars, got {value}")
    return amount


def parse_price(text: str, what: str = "a price") -> Price | None:
    """A price as an administrator typed it: ``per_call=…``, ``per_image=…``, ``per_1k_input=…``,
    ``per_1k_output=…`` (any of them, separated by spaces or commas), or ``off`` for none (None).
    ``ValidationError`` says what is wrong."""
    value = str(text).strip()
    if value.lower() in _OFF_WORDS:
        return None
    parts: dict[str, float] = {}
    for item in _SEPARATORS.split(value):
        if not item:
            continue
        name, sep, amount = item.partition("=")
        name = name.strip().lower()
        if not sep or name not in PRICE_PARTS:
            raise ValidationError(f"{what}: {item[:40]!r} is not a price part; write e.g. per_image=0.04 with any of "
                                  f"{', '.join(PRICE_PARTS)} (or off)")
        if name in parts:
            raise ValidationError(f"{what}: {name} is given twice")
        parts[name] = _amount(amount, f"{what}: {name}", MAX_PRICE)
    return Price(**parts)


def stored_price(provider: str, text: str | None) -> Price | None:
    """``provider``'s price as stored (``price_key``): None when there is none, or when the stored text does not
    parse (edited by hand), which the log says once."""
    try:
        return parse_price(text or "")
    except ValidationError as exc:
        if text not in _warned:
            _warned.add(text)
            log.warning("the stored %s%s is not valid (%s): its calls are not priced", PRICE_PREFIX,
                        provider.split(":", 1)[-1], exc)
        return None


def parse_budget(text: object) -> float | None:
    """A task's budget as typed: an amount in dollars (``12.50``), or empty for none. ``ValidationError`` for
    anything else (zero, negative, not a number, absurdly large)."""
    if text is None:
        return None
    if isinstance(text, bool) or not isinstance(text, str | int | float):
        raise ValidationError(f"budget must be an amount in dollars like 12.50, got {str(text)[:40]!r}")
    value = str(text).strip()
    if not value:
        return None
    if isinstance(text, float) and not math.isfinite(text):
        raise ValidationError(f"budget must be an amount in dollars like 12.50, got {value[:40]!r}")
    amount = _amount(f"{text:.6f}" if isinstance(text, float) else value, "budget", MAX_BUDGET, "12.50")
    if amount <= 0:
        raise ValidationError(f"budget must be more than 0 dollars, got {value[:40]!r}")
    return amount


def call_cost(price: Price | None, *, ok: bool, images: int, input_tokens: int | None,
              output_tokens: int | None) -> tuple[float | None, bool]:
    """``(cost, tokens_unpriced)`` of one call (the module docstring says what is counted); cost None when the
    provider has no price."""
    if price is None:
        return None, False
    cost = price.fixed(images) if ok else 0.0
    reported = input_tokens is not None or output_tokens is not None
    if reported:
        cost += price.per_1k_input * (input_tokens or 0) / 1000 + price.per_1k_output * (output_tokens or 0) / 1000
    return round(cost, 9), ok and price.per_token and not reported


def format_money(amount: float | None) -> str:
    """``$1.10``; more places when cents are not exact (``$0.125``, ``$0.0042``, ``$0.3333``); ``—`` when unknown."""
    if amount is None:
        return "—"
    amount = round(amount, 6)
    if amount == round(amount, 2):
        return f"${amount:,.2f}"
    whole, _, fraction = f"{amount:,.{4 if abs(amount) >= 0.01 else 6}f}".partition(".")
    return f"${whole}.{fraction.rstrip('0').ljust(2, '0')}"


def usage_table(rows: list[UsageSummary]) -> list[dict[str, Any]]:
    """Provider usage as a table a person reads: one row per provider (calls, images, tokens, seconds, cost), with
    "—" where the provider reported no tokens or had no price, and "≥" where part of a cost is unknown."""
    table = []
    for u in rows:
        table.append({
            "provider": u.provider,
            "calls ok": u.calls_ok,
            "calls failed": u.calls_failed,
            "images": u.images,
            "tokens": _tokens_text(u),
            "seconds": round(u.seconds, 1),
            "s per call": round(u.seconds / u.calls, 2) if u.calls else None,
            "cost": cost_text(u.cost, partial=bool(u.unpriced_calls or u.tokens_unpriced)),
        })
    return table


def usage_total(rows: list[UsageSummary]) -> str:
    """The total cost of ``rows`` as text (``—``: nothing priced; ``≥ $x``: some calls' cost is unknown)."""
    costs = [u.cost for u in rows if u.cost is not None]
    partial = any(u.unpriced_calls or u.tokens_unpriced for u in rows)
    return cost_text(sum(costs) if costs else None, partial=partial)


def cost_text(cost: float | None, *, partial: bool = False) -> str:
    if cost is None:
        return "—"
    return ("≥ " if partial else "") + format_money(cost)


def _tokens_text(u: UsageSummary) -> str:
    if not u.tokens_reported:
        return "—"  # the provider reported none: unknown, not zero
    text = f"{u.input_tokens:,} in / {u.output_tokens:,} out"
    return text if u.tokens_reported >= u.calls else f"{text} ({u.tokens_reported} of {u.calls} calls reported)"
