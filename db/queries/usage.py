"""Queries of the provider usage ledger (issue 21): one ``provider_usage`` row per call a task made (written by
``pipeline.stages.usage``), summed per task and provider for the Tasks page and the manifest, per provider for the
overview's week, and read back as recent latencies and token counts for the New task page's estimate. Also the
providers' prices, rows of ``settings`` named ``price:<provider>:<model>``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from db.models import GenerationTask, ProviderUsage, Setting, User
from db.queries.settings import add_audit

__all__ = [
    "RecentCall",
    "TaskSpend",
    "UsageSummary",
    "delete_setting",
    "insert_usage",
    "price_settings",
    "recent_calls",
    "task_spend",
    "usage_by_task",
    "usage_by_task_id",
    "usage_since",
]

def insert_usage(session: Session, **values: Any) -> None:
    """Record one call (the columns of ``ProviderUsage``)."""
    session.add(ProviderUsage(**values))


@dataclass(frozen=True)
class UsageSummary:
    """A provider's calls summed (for one task, or over a period)."""

    provider: str  # kind:provider:model
    kind: str
    calls_ok: int
    calls_failed: int
    images: int
    input_tokens: int  # summed over the calls that reported tokens (``tokens_reported``)
    output_tokens: int
    tokens_reported: int
    cost: float | None  # summed over the priced calls; None when none was priced
    unpriced_calls: int  # calls made while the provider had no price
    tokens_unpriced: int  # calls whose token price could not be applied (no tokens reported)
    seconds: float

    @property
    def calls(self) -> int:
        return self.calls_ok + self.calls_failed

    def as_dict(self) -> dict[str, Any]:
        """For JSON (the manifest): the tokens None when no call reported any (unknown, not zero)."""
        values = asdict(self)
        if not self.tokens_reported:
            values["input_tokens"] = values["output_tokens"] = None
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> UsageSummary:
        return cls(**{**values, "input_tokens": values.get("input_tokens") or 0,
                      "output_tokens": values.get("output_tokens") or 0})


def _summary_columns() -> list[Any]:
    u = ProviderUsage
    return [
        u.provider,
        sa.func.min(u.kind),
        sa.func.sum(sa.case((u.ok, 1), else_=0)),
        sa.func.sum(sa.case((u.ok, 0), else_=1)),
        sa.func.sum(u.images),
        sa.func.coalesce(sa.func.sum(u.input_tokens), 0),
        sa.func.coalesce(sa.func.sum(u.output_tokens), 0),
        sa.func.sum(sa.case((sa.or_(u.input_tokens.is_not(None), u.output_tokens.is_not(None)), 1), else_=0)),
        sa.func.sum(u.cost),
        sa.func.sum(sa.case((u.cost.is_(None), 1), else_=0)),
        sa.func.sum(sa.case((u.tokens_unpriced, 1), else_=0)),
        sa.func.sum(u.seconds),
    ]


def _summary(row: tuple[Any, ...]) -> UsageSummary:
    provider, kind, ok, failed, images, tokens_in, tokens_out, reported, cost, unpriced, tokens_unpriced, seconds = row
    return UsageSummary(str(provider), str(kind), int(ok or 0), int(failed or 0), int(images or 0), int(tokens_in),
                        int(tokens_out), int(reported or 0), None if cost is None else round(float(cost), 9),
                        int(unpriced or 0), int(tokens_unpriced or 0), float(seconds or 0.0))


def usage_by_task(session: Session, task_pks: list[int]) -> dict[int, list[UsageSummary]]:
    """Each task's usage per provider, in one query (no N+1 on the Tasks page)."""
    if not task_pks:
        return {}
    u = ProviderUsage
    query = (sa.select(u.task_pk, *_summary_columns()).where(u.task_pk.in_(task_pks))
             .group_by(u.task_pk, u.provider).order_by(u.task_pk, u.provider))
    out: dict[int, list[UsageSummary]] = {}
    for row in session.execute(query):
        out.setdefault(int(row[0]), []).append(_summary(tuple(row[1:])))
    return out


def usage_by_task_id(session: Session, task_ids: list[str]) -> dict[str, list[UsageSummary]]:
    """The usage of the tasks named by their ``task_id`` (the manifest's tasks)."""
    if not task_ids:
        return {}
    query = sa.select(GenerationTask.id, GenerationTask.task_id).where(GenerationTask.task_id.in_(task_ids))
    pks = {int(pk): str(task_id) for pk, task_id in session.execute(query)}
    return {pks[pk]: rows for pk, rows in usage_by_task(session, list(pks)).items()}


def usage_since(session: Session, since: datetime, user_id: int | None = None) -> list[UsageSummary]:
    """Usage per provider of the calls made since ``since`` (of ``user_id``'s tasks; None: everyone's), the
    deleted tasks' calls included."""
    u = ProviderUsage
    query = sa.select(*_summary_columns()).where(u.created_at >= since).group_by(u.provider).order_by(u.provider)
    if user_id is not None:
        query = query.where(u.user_id == user_id)
    return [_summary(tuple(row)) for row in session.execute(query)]


@dataclass(frozen=True)
class TaskSpend:
    """What a task has spent so far over all its runs, and the tokens each provider reported for its calls."""

    spent: float
    tokens: dict[str, tuple[int, int, int]]  # provider -> (calls that reported tokens, input, output)


def task_spend(session: Session, task_pk: int) -> TaskSpend:
    u = ProviderUsage
    reported = sa.or_(u.input_tokens.is_not(None), u.output_tokens.is_not(None))
    query = (sa.select(u.provider, sa.func.sum(u.cost), sa.func.sum(sa.case((reported, 1), else_=0)),
                       sa.func.coalesce(sa.func.sum(u.input_tokens), 0),
                       sa.func.coalesce(sa.func.sum(u.output_tokens), 0))
             .where(u.task_pk == task_pk).group_by(u.provider))
    spent, tokens = 0.0, {}
    for provider, cost, calls, tokens_in, tokens_out in session.execute(query):
        spent += float(cost or 0.0)
        tokens[str(provider)] = (int(calls or 0), int(tokens_in), int(tokens_out))
    return TaskSpend(round(spent, 9), tokens)


@dataclass(frozen=True)
class RecentCall:
    seconds: float
    input_tokens: int | None
    output_tokens: int | None


def recent_calls(session: Session, provider: str, limit: int = 200) -> list[RecentCall]:
    """The last ``limit`` calls to ``provider`` that succeeded, newest first: their seconds and reported tokens."""
    u = ProviderUsage
    query = (sa.select(u.seconds, u.input_tokens, u.output_tokens).where(u.provider == provider, u.ok.is_(True))
             .order_by(u.created_at.desc(), u.id.desc()).limit(limit))
    return [RecentCall(float(s), i, o) for s, i, o in session.execute(query)]


def price_settings(session: Session, prefix: str) -> dict[str, str]:
    """The settings whose key starts with ``prefix`` (the providers' prices: ``price:<provider>:<model>``)."""
    query = sa.select(Setting.key, Setting.value).where(Setting.key.startswith(prefix, autoescape=True))
    return {str(key): str(value) for key, value in session.execute(query)}


def delete_setting(session: Session, key: str, actor: User | None) -> bool:
    """Remove a text setting (a price set to off), auditing it. Returns False when there was none."""
    row = session.scalar(sa.select(Setting).where(Setting.key == key))
    if row is None:
        return False
    add_audit(session, actor, "setting", key, row.value, None)
    session.delete(row)
    return True
