"""What a task will take before it is submitted: its provider calls, a duration and a cost (the New task page).

The duration is what the providers impose, not a constant: each kind of call (persona batch, grid prompt, image)
takes the median seconds of its provider's recent calls (``provider_usage``; the documented defaults until
``MIN_OBSERVED_CALLS`` calls were made), and as many run at once as the provider's limit allows (``settings``:
calls at once and per minute), within what one task can have out (``MAX_BATCHES_IN_FLIGHT`` persona batches,
``PERSONAS_IN_FLIGHT`` personas, each with its grids in parallel). The task takes about the longest of: the data
stage, then the chain of the last batch's personas (a base, the grid prompts one after another, a grid); and each
provider's call-seconds divided by its limit. Other tasks sharing the providers make it longer.

The cost is each kind's calls at its provider's price (``pipeline.core.usage``): per call, per image, and per 1k
tokens at the tokens the provider reported for its recent calls on average. A token price with no tokens observed
yet is left out, and the estimate says so (``cost_partial``); a provider without a price makes the cost unknown.
"""

from __future__ import annotations

import math
import os
import statistics
from dataclasses import dataclass

import db.queries as q
from db.session import Database
from pipeline.core.config import Settings
from pipeline.core.domain import IMAGES_PER_BLOCK, MAX_BATCHES_IN_FLIGHT, PERSONA_BATCH_SIZE
from pipeline.core.usage import Price, price_key, provider_key, stored_price
from pipeline.submit.submission import build_snapshot

KINDS = ("persona", "prompt", "image")
MIN_OBSERVED_CALLS = 5  # fewer recent calls than this: the documented default latency
OBSERVED_CALLS = 200  # the latency and tokens of a provider's last calls this many
# Seconds per call until calls are observed (the providers' documented latencies; an image is a base or a grid).
DEFAULT_SECONDS = {
    ("persona", "offline"): 0.05, ("persona", "flowise"): 25.0, ("persona", "openai"): 20.0,
    ("prompt", "offline"): 0.0, ("prompt", "flowise"): 6.0, ("prompt", "openai"): 5.0,
    ("image", "offline"): 0.25, ("image", "openai"): 30.0,
}
FALLBACK_SECONDS = {"persona": 20.0, "prompt": 5.0, "image": 30.0}


@dataclass(frozen=True)
class KindEstimate:
    """One kind of call of the task: how many, how long each, how many at once, and what they cost."""

    kind: str
    provider: str | None  # kind:provider:model; None: offline
    calls: int
    seconds_per_call: float
    observed_calls: int  # recent calls the latency comes from (0: the default)
    at_once: int
    rate_per_minute: int | None
    cost: float | None  # None: the provider has no price
    cost_partial: bool  # a token price left out: no tokens observed yet

    @property
    def busy_seconds(self) -> float:
        """How long the provider is kept busy by these calls at its limits."""
        seconds = math.ceil(self.calls / self.at_once) * self.seconds_per_call if self.calls else 0.0
        if self.rate_per_minute:
            seconds = max(seconds, 60.0 * self.calls / self.rate_per_minute)
        return seconds


@dataclass(frozen=True)
class Estimate:
    kinds: dict[str, KindEstimate]
    seconds: float

    @property
    def persona_calls(self) -> int:
        return self.kinds["persona"].calls

    @property
    def prompt_calls(self) -> int:
        return self.kinds["prompt"].calls

    @property
    def image_calls(self) -> int:
        return self.kinds["image"].calls

    @property
    def calls(self) -> int:
        return sum(k.calls for k in self.kinds.values())

    @property
    def cost(self) -> float | None:
        """The estimated cost in dollars; None when a network provider has no price (offline calls are free)."""
        costs = [k.cost for k in self.kinds.values() if k.provider is not None]
        if any(c is None for c in costs):
            return None
        return round(sum(c for c in costs if c is not None), 6)

    @property
    def cost_partial(self) -> bool:
        return any(k.cost_partial for k in self.kinds.values())

    @property
    def observed(self) -> bool:
        """Whether any latency comes from observed calls (else all are the documented defaults)."""
        return any(k.observed_calls for k in self.kinds.values())


def call_counts(count: int, images_per_persona: int) -> dict[str, int]:
    """The calls a task makes of each kind, retries aside."""
    blocks = max(1, images_per_persona // IMAGES_PER_BLOCK)
    return {"persona": -(-count // PERSONA_BATCH_SIZE), "prompt": count * blocks, "image": count * (1 + blocks)}


def estimate_task(db: Database, settings: Settings, count: int, images_per_persona: int) -> Estimate:
    """The calls, duration and cost of a task of ``count`` personas × ``images_per_persona`` images with the
    configured providers (module docstring)."""
    snapshot = build_snapshot(db, settings)
    blocks = max(1, images_per_persona // IMAGES_PER_BLOCK)
    personas_at_once = max(1, int(settings.personas_in_flight))
    task_cap = {"persona": MAX_BATCHES_IN_FLIGHT, "prompt": personas_at_once, "image": personas_at_once * blocks}
    cores = os.cpu_count() or 1
    kinds = {}
    with db.session() as session:
        for kind, calls in call_counts(count, images_per_persona).items():
            provider = provider_key(kind, snapshot, settings.persona_provider, settings.image_provider)
            name = str((snapshot.get("providers") or {}).get(kind) or "offline")
            if provider is None:
                default = DEFAULT_SECONDS.get((kind, "offline"), 0.0)
                kinds[kind] = KindEstimate(kind, None, calls, default, 0, min(task_cap[kind], cores), None, 0.0,
                                           False)
                continue
            limits = q.read_provider_limits(session, kind)
            recent = q.recent_calls(session, provider, OBSERVED_CALLS)
            if len(recent) >= MIN_OBSERVED_CALLS:
                seconds, observed = statistics.median(c.seconds for c in recent), len(recent)
            else:
                seconds, observed = DEFAULT_SECONDS.get((kind, name), FALLBACK_SECONDS[kind]), 0
            cost, partial = _cost(stored_price(provider, q.get_setting(session, price_key(provider))), kind, calls, recent)
            at_once = min(task_cap[kind], limits.concurrency)
            kinds[kind] = KindEstimate(kind, provider, calls, seconds, observed, at_once, limits.rate_per_minute, cost,
                                       partial)
    chain = kinds["image"].seconds_per_call * 2 + blocks * kinds["prompt"].seconds_per_call  # base, prompts, a grid
    seconds = max(kinds["persona"].busy_seconds + chain, kinds["prompt"].busy_seconds, kinds["image"].busy_seconds)
    return Estimate(kinds, seconds)


def _cost(price: Price | None, kind: str, calls: int, recent: list[q.RecentCall]) -> tuple[float | None, bool]:
    """The cost of ``calls`` calls at ``price`` (tokens at the recent calls' average) and whether a token price was
    left out (no tokens observed)."""
    if price is None:
        return None, False
    cost = calls * price.fixed(1 if kind == "image" else 0)
    if not price.per_token:
        return cost, False
    reported = [c for c in recent if c.input_tokens is not None or c.output_tokens is not None]
    if not reported:
        return cost, True
    tokens_in = statistics.fmean(c.input_tokens or 0 for c in reported)
    tokens_out = statistics.fmean(c.output_tokens or 0 for c in reported)
    return cost + calls * (price.per_1k_input * tokens_in + price.per_1k_output * tokens_out) / 1000, False
