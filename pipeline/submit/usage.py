"""Provider prices and usage for the app and the command line (issue 21, item 4).

A price is per provider and model (``pipeline.core.usage``): a settings row ``price:<provider>:<model>``, set by an
administrator on the Settings page or with ``python -m pipeline settings set price:openai:gpt-image-1
per_image=0.04``; ``off`` removes it. A bad value is refused with a message and nothing is written. A change
applies to the next call of every running task (each call reads its price).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import db.queries as q
from db.models import User
from db.session import Database
from pipeline.core.config import Settings
from pipeline.core.errors import AccessDenied, ValidationError
from pipeline.core.usage import PRICE_PREFIX, parse_price, price_key, provider_key
from pipeline.submit.submission import build_snapshot

KIND_LABELS = {"persona": "persona LLM", "prompt": "grid-prompt LLM", "image": "image API"}
MAX_PRICE_KEY_CHARS = 255
_PRICE_KEY = re.compile(r"price:[A-Za-z0-9_.-]+(:[^\s]+)?")


@dataclass(frozen=True)
class PriceRow:
    """A provider's price as the Settings page lists it."""

    key: str  # price:<provider>:<model>
    used_for: str  # the kinds of call the current configuration makes to it ("" when none)
    text: str  # the stored price, "" when none


def is_price_key(key: str) -> bool:
    return str(key).startswith(PRICE_PREFIX)


def check_price_key(key: str) -> str:
    """``price:<provider>:<model>`` (e.g. ``price:openai:gpt-image-1``), else ``ValidationError``."""
    text = str(key).strip()
    if len(text) > MAX_PRICE_KEY_CHARS or not _PRICE_KEY.fullmatch(text):
        raise ValidationError(f"a price's key is price:<provider>:<model>, e.g. price:openai:gpt-image-1, got "
                              f"{text[:60]!r}")
    return text


def configured_providers(db: Database, settings: Settings) -> dict[str, list[str]]:
    """The price keys of the providers the next task would call, with the kinds of call it makes to each."""
    snapshot = build_snapshot(db, settings)
    keys: dict[str, list[str]] = {}
    for kind, label in KIND_LABELS.items():
        provider = provider_key(kind, snapshot, settings.persona_provider, settings.image_provider)
        if provider is not None:
            keys.setdefault(price_key(provider), []).append(label)
    return keys


def price_rows(db: Database, settings: Settings) -> list[PriceRow]:
    """The configured providers' prices, then any other stored price (a provider used before)."""
    configured = configured_providers(db, settings)
    with db.session() as session:
        stored = q.price_settings(session, PRICE_PREFIX)
    rows = [PriceRow(key, ", ".join(kinds), stored.get(key, "")) for key, kinds in configured.items()]
    rows += [PriceRow(key, "", text) for key, text in sorted(stored.items()) if key not in configured]
    return rows


def get_price(db: Database, key: str) -> str:
    """A provider's stored price, or ``off``."""
    key = check_price_key(key)
    with db.session() as session:
        return q.get_setting(session, key) or "off"


def set_price(db: Database, key: str, text: str, actor: User | None) -> bool:
    """Validate and store a provider's price (``off``: remove it); ``actor=None`` is the command line. Returns
    whether it changed."""
    if actor is not None and not actor.is_admin:
        raise AccessDenied("only administrators can change prices")
    key = check_price_key(key)
    price = parse_price(text, key)
    with db.transaction(immediate=True) as session:
        if price is None:
            return q.delete_setting(session, key, actor)
        return q.set_setting(session, key, price.text(), actor)


def task_usage(db: Database, task_pks: list[int]) -> dict[int, list[q.UsageSummary]]:
    """Each task's provider usage (the Tasks page): ``pipeline.core.usage.usage_table`` shows it."""
    with db.session() as session:
        return q.usage_by_task(session, task_pks)
