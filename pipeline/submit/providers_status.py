"""What the Tasks page shows of the providers' limits: for each provider called lately, its configured and
effective concurrency, its calls in flight over every worker and host, its recent 429s and whether its circuit
breaker has paused it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import db.queries as q
from db.models import utcnow
from db.session import Database


@dataclass(frozen=True)
class ProviderStatus:
    provider: str  # kind:provider:model, e.g. image:openai:gpt-image-1.5
    kind: str
    configured: int
    effective: int  # lower than configured while it recovers from pushing back
    in_flight: int
    rate_per_minute: int | None
    recent_throttles: int  # 429/503 replies in the last few minutes
    paused_until: datetime | None

    @property
    def note(self) -> str:
        if self.paused_until is not None:
            return f"paused until {self.paused_until:%H:%M:%S} UTC (refusals in a row)"
        if self.effective < self.configured:
            return "backed off after the provider pushed back"
        return ""


def provider_status(db: Database) -> list[ProviderStatus]:
    """Every provider with calls in flight or an adaptive state, read live from the database."""
    with db.session() as session:
        rows = q.provider_rows(session, utcnow())
    return [ProviderStatus(r.provider, r.kind, r.configured, r.effective, r.in_flight, r.rate_per_minute,
                           r.recent_throttles, r.paused_until) for r in rows]
