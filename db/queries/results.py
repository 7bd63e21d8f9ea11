"""Queries on ``generation_results`` used by the executor (the gallery's live in ``gallery``)."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

from db.models import GenerationResult, PersonaStatus, utcnow

__all__ = [
    "append_images",
    "batch_exists",
    "count_personas",
    "existing_names",
    "failed_personas",
    "get_result",
    "insert_persona_batches",
    "insert_personas",
    "list_results",
    "mark_persona",
    "max_batch_number",
    "pending_persona_ids",
    "persona_ids",
    "set_base_image",
    "store_review",
]


def count_personas(session: Session, task_pk: int) -> int:
    return session.scalar(sa.select(sa.func.count()).where(GenerationResult.task_id == task_pk)) or 0


def max_batch_number(session: Session, task_pk: int) -> int:
    return session.scalar(sa.select(sa.func.max(GenerationResult.batch_number)).where(GenerationResult.task_id == task_pk)) or 0


def batch_exists(session: Session, task_pk: int, batch_number: int) -> bool:
    query = sa.select(GenerationResult.id).where(
        GenerationResult.task_id == task_pk, GenerationResult.batch_number == batch_number
    )
    return session.scalar(query.limit(1)) is not None


def existing_names(session: Session, task_pk: int) -> list[tuple[str, str]]:
    return [
        (first, last)
        for first, last in session.execute(
            sa.select(GenerationResult.firstname, GenerationResult.lastname).where(GenerationResult.task_id == task_pk)
        )
    ]


_RESULTS = cast(sa.Table, GenerationResult.__table__)
_POSITION = ("batch_number", "slot")
_PAGE_ROWS = 1000  # rows per multi-row INSERT on PostgreSQL (as SQLAlchemy's insertmanyvalues)
_Processor = Callable[[Any], Any]


def insert_personas(
    session: Session, task_pk: int, batch_number: int, personas: Iterable[Mapping[str, Any]]
) -> int:
    """Insert one batch's personas (slots 0..n-1). The unique (task, batch, slot) rule rejects a repeated batch."""
    return insert_persona_batches(session, task_pk, {batch_number: personas})


def insert_persona_batches(
    session: Session, task_pk: int, batches: Mapping[int, Iterable[Mapping[str, Any]]]
) -> int:
    """Insert several batches in one executemany (imports, benchmarks); same rows as ``insert_personas``.

    The rows go to the driver as tuples in one ``executemany`` (SQLite) or in multi-row ``VALUES`` pages
    (PostgreSQL), through ``exec_driver_sql`` (errors are SQLAlchemy's, as before), holding the values the Core
    insert would bind: the same columns, Python-side defaults and type processing, done once for the values every
    row shares. Anything else (another driver, a key that is not a column) takes the Core insert.
    """
    now = utcnow()
    fixed: dict[str, Any] = {"task_id": task_pk, "status": PersonaStatus.PENDING.value, "created_at": now,
                             "updated_at": now}
    flat = [(batch, slot, p) for batch, personas in batches.items() for slot, p in enumerate(personas)]
    if not flat:
        return 0
    # one executemany needs the same keys in every row: a key some rows lack is None in those (as in Core)
    keys = [k for k in dict.fromkeys(k for _, _, p in flat for k in p) if k not in fixed and k not in _POSITION]
    dialect = session.get_bind().dialect
    plan = _driver_insert(dialect, tuple(keys), tuple(fixed))
    if plan is None:
        return _core_insert(session, fixed, flat)
    head, processors, tail_columns = plan
    tail = tuple(_bind(processors.get(c), fixed[c] if c in fixed else _RESULTS.c[c].default.arg)  # type: ignore[union-attr]
                 for c in tail_columns)
    getters = [(k, processors.get(k)) for k in keys]
    if any(process is not None for _, process in getters):
        values = [
            (*(_bind(process, p.get(k)) for k, process in getters), batch, slot, *tail) for batch, slot, p in flat
        ]
    else:
        values = [(*map(p.get, keys), batch, slot, *tail) for batch, slot, p in flat]
    if session.autoflush:
        session.flush()  # what session.execute would have done first
    connection = session.connection()
    width = len(values[0])
    if dialect.name == "sqlite":  # the sqlite3 module's executemany: one prepared statement, stepped per row
        connection.exec_driver_sql(_values_sql(head, "?", width, 1), values)
    else:  # psycopg2's executemany is a round trip per row: multi-row VALUES pages instead (as insertmanyvalues)
        for start in range(0, len(values), _PAGE_ROWS):
            page = values[start:start + _PAGE_ROWS]
            connection.exec_driver_sql(_values_sql(head, "%s", width, len(page)), tuple(itertools.chain.from_iterable(page)))
    return len(values)


@functools.lru_cache(maxsize=64)
def _values_sql(head: str, placeholder: str, width: int, rows: int) -> str:
    row = f"({', '.join([placeholder] * width)})"
    return head + ", ".join([row] * rows)


def _core_insert(session: Session, fixed: dict[str, Any], flat: list[tuple[int, int, Mapping[str, Any]]]) -> int:
    rows = [{**p, **fixed, "batch_number": batch, "slot": slot} for batch, slot, p in flat]
    keys = {k for row in rows for k in row}
    if any(len(row) != len(keys) for row in rows):  # one executemany needs the same keys in every row
        rows = [{k: row.get(k) for k in keys} for row in rows]
    session.execute(_RESULTS.insert(), rows)  # Core on the table: no ORM bookkeeping per row
    return len(rows)


def _bind(process: _Processor | None, value: Any) -> Any:
    return value if process is None else process(value)


@functools.lru_cache(maxsize=64)
def _driver_insert(
    dialect: sa.Dialect, keys: tuple[str, ...], fixed: tuple[str, ...]
) -> tuple[str, dict[str, _Processor], tuple[str, ...]] | None:
    """For an insert of these keys: ("INSERT INTO ... (columns) VALUES ", bind processors by column, the columns
    after ``keys`` and the position that every row shares: ``fixed`` then the constant Python defaults), or None
    when only the Core insert does it right (another driver, a key that is not a column, a computed default)."""
    if dialect.name != "sqlite" and (dialect.name, dialect.driver) != ("postgresql", "psycopg2"):
        return None
    columns = _RESULTS.c
    if any(k not in columns for k in keys):
        return None
    given = {*keys, *fixed, *_POSITION}
    defaulted = []
    for column in columns:
        if column.key in given or column.default is None:
            continue
        if not (isinstance(column.default, sa.ColumnDefault) and column.default.is_scalar):
            return None
        defaulted.append(column.key)
    tail = (*fixed, *defaulted)
    names = (*keys, *_POSITION, *tail)
    processors: dict[str, _Processor] = {}
    for name in names:
        process = columns[name].type.dialect_impl(dialect).bind_processor(dialect)
        if process is not None:
            if name in _POSITION:
                return None  # batch and slot are passed as they are
            processors[name] = process
    preparer = dialect.identifier_preparer
    head = f"INSERT INTO {preparer.format_table(_RESULTS)} ({', '.join(preparer.quote(n) for n in names)}) VALUES "
    return head, processors, tail


def persona_ids(session: Session, task_pk: int, status: str) -> list[int]:
    """The ids of a task's personas with ``status``, in generation order."""
    return list(
        session.scalars(
            sa.select(GenerationResult.id)
            .where(GenerationResult.task_id == task_pk, GenerationResult.status == status)
            .order_by(GenerationResult.batch_number, GenerationResult.slot, GenerationResult.id)
        )
    )


def pending_persona_ids(session: Session, task_pk: int) -> list[int]:
    return persona_ids(session, task_pk, PersonaStatus.PENDING.value)


def get_result(session: Session, result_id: int) -> GenerationResult | None:
    return session.get(GenerationResult, result_id)


def list_results(session: Session, task_pk: int) -> list[GenerationResult]:
    return list(
        session.scalars(
            sa.select(GenerationResult)
            .where(GenerationResult.task_id == task_pk)
            .order_by(GenerationResult.batch_number, GenerationResult.slot, GenerationResult.id)
        )
    )


def failed_personas(session: Session, task_pk: int) -> list[sa.Row[Any]]:
    """The failed personas of a task, in order: (firstname, lastname, batch_number, slot, error)."""
    r = GenerationResult
    return list(session.execute(
        sa.select(r.firstname, r.lastname, r.batch_number, r.slot, r.error)
        .where(r.task_id == task_pk, r.status == PersonaStatus.FAILED.value)
        .order_by(r.batch_number, r.slot, r.id)
    ))


def set_base_image(session: Session, result: GenerationResult, uri: str, meta: dict[str, Any]) -> None:
    image_meta = dict(result.image_meta or {})
    image_meta["base"] = meta
    result.base_image_url = uri
    result.image_meta = image_meta
    result.updated_at = utcnow()


def append_images(
    session: Session, result: GenerationResult, uris: list[str], metas: list[dict[str, Any]], extra: dict[str, Any]
) -> None:
    """Append one finished block: its URIs to ``images`` and their metadata to ``image_meta``."""
    image_meta = dict(result.image_meta or {})
    image_meta["images"] = [*image_meta.get("images", []), *metas]
    image_meta.setdefault("blocks", []).append(extra)
    result.images = [*(result.images or []), *uris]
    result.image_meta = image_meta
    result.image_count = len(result.images)
    result.updated_at = utcnow()


def mark_persona(
    session: Session, result: GenerationResult, status: str, error: str | None = None, now: datetime | None = None
) -> None:
    result.status = status
    result.error = error
    if status == PersonaStatus.FAILED.value:
        result.attempts = (result.attempts or 0) + 1
    result.updated_at = now or utcnow()


_STORE_QUALITY = (
    sa.update(_RESULTS)
    .where(_RESULTS.c.id == sa.bindparam("pk"), _RESULTS.c.task_id == sa.bindparam("task"))
    .values(quality=sa.bindparam("new_quality", type_=_RESULTS.c.quality.type),
            quality_flags=sa.bindparam("new_flags", type_=_RESULTS.c.quality_flags.type))
)


def store_review(
    session: Session,
    task: Any,
    per_persona: Mapping[int, dict[str, Any]],
    summary: dict[str, Any],
    targets_report: dict[str, Any] | None,
) -> None:
    """Store quality flags per persona (one UPDATE statement, executed for every row of the task it names) and the
    task's summaries."""
    if per_persona:
        session.connection().execute(_STORE_QUALITY, [
            {"pk": result_id, "task": task.id, "new_quality": entry,
             "new_flags": sorted(entry.get("flags", [])) or None}
            for result_id, entry in per_persona.items()
        ])
    task.quality_summary = summary
    task.targets_report = targets_report
