"""Queries of the provider limits shared by every worker, process and host (issue 21): the calls in flight
(``provider_slots``), each provider's adaptive state (``provider_state``) and the administrator's limits (rows of
``settings``, one concurrency limit and one optional requests-per-minute limit per kind of provider).

A provider is named ``kind:provider[:model]`` (``pipeline.stages.limits.provider_key``). Admitting a call is one
short write transaction (``try_acquire``): the provider's state row is locked (``FOR UPDATE`` on PostgreSQL; SQLite's
``BEGIN IMMEDIATE`` already excludes other writers), its unexpired slots are counted, and a slot is inserted when
they are below the effective limit. Every call of every worker pays for it, so it is kept to three statements:
rows that no longer count are cleared by each process's renewal of its slots (``renew_slots``), not here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from db.models import ProviderSlot, ProviderState, Setting
from db.queries.settings import parse_whole_number

__all__ = [
    "BREAKER_REFUSALS",
    "DECREASE_FACTOR",
    "DEFAULT_CONCURRENCY",
    "LIMIT_KINDS",
    "MAX_PROVIDER_CONCURRENCY",
    "MAX_PROVIDER_RATE",
    "PROBE_WINDOWS",
    "RATE_OFF",
    "Admission",
    "ProviderLimits",
    "ProviderRow",
    "concurrency_key",
    "limit_setting_keys",
    "parse_provider_concurrency",
    "parse_provider_rate",
    "provider_rows",
    "rate_key",
    "read_provider_limits",
    "record_pushback",
    "record_successes",
    "release_slot",
    "renew_slots",
    "try_acquire",
]

LIMIT_KINDS = ("persona", "prompt", "image")
DEFAULT_CONCURRENCY = {"persona": 8, "prompt": 16, "image": 16}
MAX_PROVIDER_CONCURRENCY = 512
MAX_PROVIDER_RATE = 100_000  # requests per minute
RATE_WINDOW = timedelta(minutes=1)
RATE_OFF = "off"
_OFF_WORDS = {"off", "none"}

THROTTLE_WINDOW = timedelta(minutes=10)  # "recent" refusals on the Tasks page
BREAKER_REFUSALS = 5  # refusals in a row that open the circuit breaker
BREAKER_PAUSE_SECONDS = 10.0  # at least this long (longer when the provider's Retry-After says so)
DECREASE_FACTOR = 0.7  # a pushback multiplies the effective limit by this (TCP CUBIC's factor)
PROBE_WINDOWS = 8  # up to the limit at which the provider last pushed back, and past it, the limit grows this slower


def concurrency_key(kind: str) -> str:
    """The setting of how many calls to the ``kind`` provider may be in flight at once, over all hosts."""
    return f"{kind}_concurrency"


def rate_key(kind: str) -> str:
    """The setting of how many calls to the ``kind`` provider may start per minute, over all hosts (or off)."""
    return f"{kind}_rate_per_minute"


def limit_setting_keys() -> tuple[str, ...]:
    return tuple(key for kind in LIMIT_KINDS for key in (concurrency_key(kind), rate_key(kind)))


def parse_provider_concurrency(text: str, name: str = "a provider's concurrency") -> int:
    """A concurrency limit as typed: a whole number from 1 to ``MAX_PROVIDER_CONCURRENCY``; ``ValueError`` else."""
    return parse_whole_number(text, name, 1, MAX_PROVIDER_CONCURRENCY)


def parse_provider_rate(text: str, name: str = "a provider's rate") -> int | None:
    """A requests-per-minute limit as typed: ``off`` (no rate limit) or a whole number from 1 to
    ``MAX_PROVIDER_RATE``; ``ValueError`` else."""
    if str(text).strip().lower() in _OFF_WORDS:
        return None
    return parse_whole_number(text, name, 1, MAX_PROVIDER_RATE, besides="per minute, or off")


@dataclass(frozen=True)
class ProviderLimits:
    """The administrator's limits of one kind of provider."""

    concurrency: int
    rate_per_minute: int | None


def read_provider_limits(session: Session, kind: str) -> ProviderLimits:
    """The limits of the ``kind`` provider, read live; a missing or damaged value reads as its default."""
    keys = (concurrency_key(kind), rate_key(kind))
    values = dict(session.execute(sa.select(Setting.key, Setting.value).where(Setting.key.in_(keys))).all())
    try:
        concurrency = parse_provider_concurrency(values.get(keys[0]) or "")
    except ValueError:
        concurrency = DEFAULT_CONCURRENCY.get(kind, 8)
    try:
        rate = parse_provider_rate(values.get(keys[1]) or "")
    except ValueError:
        rate = None
    return ProviderLimits(concurrency, rate)


def effective_limit(state: ProviderState | None, configured: int) -> int:
    """The limit a provider is held to now: the configured one, or lower while it recovers from pushing back."""
    if state is None or state.effective_limit is None:
        return configured
    return max(1, min(state.effective_limit, configured))


def _locked_state(session: Session, provider: str, now: datetime) -> ProviderState:
    """The provider's state row, locked until the transaction ends (created on first use)."""
    query = sa.select(ProviderState).where(ProviderState.provider == provider).with_for_update()
    state = session.scalar(query)
    if state is None:
        values = {"provider": provider, "successes": 0, "refusals_in_row": 0, "throttled": 0, "updated_at": now}
        dialect = session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        session.execute(insert(ProviderState).values(**values).on_conflict_do_nothing())
        state = session.scalar(query.execution_options(populate_existing=True))
        assert state is not None
    return state


@dataclass(frozen=True)
class Admission:
    """The answer to a request for a slot: ``wait`` is None when the slot is taken, else how long to wait at least
    before asking again (0: until a call ends); ``recovering``: the provider is held below its configured limit or
    was refused lately, so the calls that go through are worth recording (``record_successes``)."""

    wait: float | None
    recovering: bool


def try_acquire(
    session: Session,
    *,
    provider: str,
    holder: str,
    worker_id: str,
    task_id: str | None,
    limits: ProviderLimits,
    now: datetime,
    ttl_seconds: float,
) -> Admission:
    """Take a slot of ``provider`` for ``holder`` if its calls in flight are below its effective limit, its calls
    started in the last minute below its rate limit, and it is not paused by its circuit breaker."""
    state = _locked_state(session, provider, now)
    recovering = state.effective_limit is not None or state.refusals_in_row > 0
    if state.paused_until is not None and state.paused_until > now:
        return Admission((state.paused_until - now).total_seconds(), recovering)
    s = ProviderSlot
    in_flight = session.scalar(sa.select(sa.func.count()).where(s.provider == provider, s.expires_at > now)) or 0
    if in_flight >= effective_limit(state, limits.concurrency):
        return Admission(0.0, recovering)
    if limits.rate_per_minute is not None:
        window = sa.select(sa.func.count(), sa.func.min(s.started_at)).where(
            s.provider == provider, s.started_at > now - RATE_WINDOW)
        started, oldest = session.execute(window).one()
        if started >= limits.rate_per_minute and oldest is not None:
            return Admission(max(0.01, (oldest + RATE_WINDOW - now).total_seconds()), recovering)
    session.execute(sa.insert(s).values(holder=holder, provider=provider, worker_id=worker_id[:64], task_id=task_id,
                                        started_at=now, expires_at=now + timedelta(seconds=ttl_seconds)))
    return Admission(None, recovering)


def release_slot(session: Session, holder: str, now: datetime, *, keep_for_rate: bool) -> None:
    """The call is over: its slot no longer counts as in flight. With a rate limit the row stays (expired) until a
    minute after the call started, to count towards the requests per minute."""
    if keep_for_rate:
        session.execute(sa.update(ProviderSlot).where(ProviderSlot.holder == holder).values(expires_at=now))
    else:
        session.execute(sa.delete(ProviderSlot).where(ProviderSlot.holder == holder))


def renew_slots(session: Session, holders: list[str], now: datetime, expires_at: datetime) -> None:
    """Keep this process's calls in flight counted (a dead process's slots expire instead), and clear the rows of
    every provider that count no more: expired, and started over a minute ago (past any rate limit's window)."""
    s = ProviderSlot
    if holders:
        session.execute(sa.update(s).where(s.holder.in_(holders)).values(expires_at=expires_at))
    session.execute(sa.delete(s).where(s.expires_at <= now, s.started_at <= now - RATE_WINDOW))


def record_successes(session: Session, provider: str, successes: int, configured: int, now: datetime) -> None:
    """Calls that went through: the refusals in a row end, and a reduced limit grows back by one for each window of
    as many successes as the limit (additive increase), up to the configured one. The steps to the limit at which
    the provider last pushed back (its ``ceiling``) and past it take ``PROBE_WINDOWS`` windows each: the limit
    stays just below the provider's own for a while instead of running into it again at once; past it, the
    ceiling is forgotten (the provider takes more now)."""
    state = _locked_state(session, provider, now)
    state.refusals_in_row = 0
    if state.effective_limit is not None:
        limit = effective_limit(state, configured)
        state.successes += successes
        while limit < configured:
            near = state.ceiling is not None and limit + 1 >= state.ceiling
            window = limit * (PROBE_WINDOWS if near else 1)
            if state.successes < window:
                break
            state.successes -= window
            limit += 1
            if state.ceiling is not None and limit > state.ceiling:
                state.ceiling = None
        state.effective_limit = None if limit >= configured else limit
        if state.effective_limit is None:
            state.successes, state.ceiling = 0, None
    state.updated_at = now


def record_pushback(
    session: Session,
    provider: str,
    *,
    configured: int,
    now: datetime,
    throttled: bool,
    slow: bool,
    retry_after: float | None,
    cooldown_seconds: float,
) -> None:
    """The provider pushed back: a refusal (``throttled``: 429, 503 or a ``Retry-After``; else another 5xx or no
    reply) or a reply far slower than usual (``slow``). A throttle or a slow reply multiplies its effective limit by
    ``DECREASE_FACTOR`` (not below 1, at most once per ``cooldown_seconds``: the calls already out when it dropped
    come back refused too) and remembers the limit it dropped from as the provider's ``ceiling``;
    ``BREAKER_REFUSALS`` refusals in a row (no success between them, at least ``cooldown_seconds`` apart) open the
    circuit breaker: no call until a pause is over (at least the ``Retry-After``), then one probe at a time."""
    state = _locked_state(session, provider, now)
    if throttled:
        if state.throttled_since is None or now - state.throttled_since > THROTTLE_WINDOW:
            state.throttled, state.throttled_since = 0, now
        state.throttled += 1
    if not slow and (state.last_refusal_at is None
                     or (now - state.last_refusal_at).total_seconds() >= cooldown_seconds):
        # One refusal per cooldown: a burst of calls refused together is one refusal, not a sustained run.
        state.refusals_in_row += 1
        state.last_refusal_at = now
    cooled = state.last_decrease_at is None or (now - state.last_decrease_at).total_seconds() >= cooldown_seconds
    if (throttled or slow) and cooled:
        state.ceiling = effective_limit(state, configured)
        state.effective_limit = max(1, int(state.ceiling * DECREASE_FACTOR))
        state.successes = 0
        state.last_decrease_at = now
    if state.refusals_in_row >= BREAKER_REFUSALS:
        pause = max(BREAKER_PAUSE_SECONDS, retry_after or 0.0)
        state.paused_until = now + timedelta(seconds=pause)
        state.effective_limit, state.successes = 1, 0
    state.updated_at = now


@dataclass(frozen=True)
class ProviderRow:
    """One provider as the Tasks page shows it."""

    provider: str
    kind: str
    configured: int
    rate_per_minute: int | None
    effective: int
    in_flight: int
    recent_throttles: int
    paused_until: datetime | None


def provider_rows(session: Session, now: datetime) -> list[ProviderRow]:
    """Every provider with calls in flight or a state row: its limits, calls in flight and recent refusals."""
    s = ProviderSlot
    counts = dict(session.execute(
        sa.select(s.provider, sa.func.count()).where(s.expires_at > now).group_by(s.provider)).all())
    states = {state.provider: state for state in session.scalars(sa.select(ProviderState))}
    rows = []
    for provider in sorted(set(counts) | set(states)):
        kind = provider.split(":", 1)[0]
        limits = read_provider_limits(session, kind)
        state = states.get(provider)
        recent = 0
        if state is not None and state.throttled_since is not None and now - state.throttled_since <= THROTTLE_WINDOW:
            recent = state.throttled
        paused = state.paused_until if state is not None and state.paused_until and state.paused_until > now else None
        rows.append(ProviderRow(provider, kind, limits.concurrency, limits.rate_per_minute,
                                effective_limit(state, limits.concurrency), int(counts.get(provider, 0)), recent,
                                paused))
    return rows
