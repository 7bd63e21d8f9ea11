"""Counts of a gallery view: each facet's values under the other filters, and the view's distributions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

from db.models import GenerationResult, GenerationTask
from db.queries.gallery.criteria import (
    Col,
    Facet,
    PersonaCriteria,
    array_elements,
    column_expression,
    condition_sql,
    gender_bucket,
    is_array_column,
    is_json_array,
    joined,
    where_clauses,
)

__all__ = ["gallery_distributions", "gallery_facets"]

R = GenerationResult
T = GenerationTask


def _value_counts(
    session: Session, value: Col, conds: list[sa.ColumnElement[bool]], limit: int
) -> list[tuple[str, int]]:
    """Top ``limit`` values of ``value`` with their counts; joins generation_tasks only when ``value`` is one of
    its columns (the language), since ``conds`` need no join."""
    expression = cast(sa.ColumnElement[Any], value)
    query = sa.select(expression.label("v"), sa.func.count().label("n"))
    query = joined(query) if T.__table__ in query.get_final_froms() else query.select_from(R)
    query = (
        query.where(*conds, expression.is_not(None), expression != "")
        .group_by(sa.literal_column("v"))  # by its label: a CASE with parameters is not repeated
        .order_by(sa.literal_column("n").desc(), sa.literal_column("v"))
        .limit(limit)
    )
    return [(str(v), int(count)) for v, count in session.execute(query)]


def _tag_counts(
    session: Session, conds: list[sa.ColumnElement[bool]], limit: int, column: Any = R.tags
) -> list[tuple[str, int]]:
    """Top ``limit`` tags (or flags) with their counts. Only arrays are expanded: the type test is a WHERE
    condition, so rows without tags never reach the JSON function."""
    is_array = is_json_array(session, column)
    inner = sa.select(R.id, column.label("tags")).select_from(R).where(*conds, is_array).subquery()
    tv = array_elements(session, inner.c.tags)
    n = sa.func.count().label("n")
    query = (
        sa.select(tv.c.value, n)
        .select_from(inner)
        .join(tv, sa.true())
        .where(tv.c.value.is_not(None), tv.c.value != "")
        .group_by(tv.c.value)
        .order_by(n.desc(), tv.c.value)
        .limit(limit)
    )
    return [(str(v), int(count)) for v, count in session.execute(query)]


def _facet_filters(session: Session, c: PersonaCriteria) -> dict[str, sa.ColumnElement[bool]]:
    """The condition of each active facet filter, by its facet key. A task column's condition is on
    ``generation_tasks`` (the facet counts join it); ``where_clauses`` puts it in its task subquery instead."""
    return {cond.facet: condition_sql(session, cond) for cond in c.conditions if cond.facet}


def gallery_facets(
    session: Session, c: PersonaCriteria, facets: Sequence[Facet], *, limit: int = 50
) -> dict[str, list[tuple[str, int]]]:
    """Value counts of each facet under every *other* active filter (standard faceting), top ``limit`` each,
    most frequent first (ties by value).

    Under a text search, in one statement (``_facets_in_one_pass``): the search is the costly filter, and
    applying it again for every facet costs several times as much. Otherwise one plain query per facet: the
    filters left are cheap, and materialising a large selection costs more than scanning it again."""
    if c.words():
        return _facets_in_one_pass(session, c, facets, limit)
    out: dict[str, list[tuple[str, int]]] = {}
    for facet in facets:
        conds = where_clauses(session, c, skip=(facet.key,))
        if is_array_column(facet.column):
            out[facet.key] = _tag_counts(session, conds, limit, getattr(R, facet.column))
        else:
            out[facet.key] = _value_counts(session, column_expression(facet.column), conds, limit)
    return out


def _facets_in_one_pass(
    session: Session, c: PersonaCriteria, facets: Sequence[Facet], limit: int
) -> dict[str, list[tuple[str, int]]]:
    """``gallery_facets`` in one statement: the rows matching every filter that is not a facet's are read once
    into a materialised CTE, with each facet's value and whether each active facet filter holds, and every
    facet counts its values there."""
    filters = _facet_filters(session, c)
    columns: list[sa.ColumnElement[Any]] = []
    for facet in facets:
        if is_array_column(facet.column):
            # JSON arrays only (NULL otherwise, which unnests to no row): PostgreSQL refuses to unnest a non-array
            array = getattr(R, facet.column)
            columns.append(sa.case((is_json_array(session, array), array)).label(f"v_{facet.key}"))
        else:
            columns.append(cast(sa.ColumnElement[Any], column_expression(facet.column)).label(f"v_{facet.key}"))
    columns += [cond.label(f"ok_{name}") for name, cond in filters.items()]
    rows = (
        joined(sa.select(*columns))
        .where(*where_clauses(session, c, facets=False))
        .cte("facet_rows")
        .prefix_with("MATERIALIZED")  # read by every facet: evaluated once
    )

    def ranked(key: str, value: Any, source: Any) -> Any:
        n = sa.func.count()
        query = (
            sa.select(
                sa.literal(key, sa.String).label("k"),
                value.label("v"),
                n.label("n"),
                sa.func.row_number().over(order_by=(n.desc(), value)).label("rk"),
            )
            .select_from(source)
            .where(*(rows.c[f"ok_{name}"] for name in filters if name != key), value.is_not(None), value != "")
            .group_by(value)
            .subquery()
        )
        return sa.select(query).where(query.c.rk <= limit)

    parts = []
    for facet in facets:
        value = rows.c[f"v_{facet.key}"]
        if is_array_column(facet.column):
            elements = array_elements(session, value)
            parts.append(ranked(facet.key, elements.c.value, rows.join(elements, sa.true())))
        else:
            parts.append(ranked(facet.key, value, rows))
    out: dict[str, list[tuple[str, int]]] = {facet.key: [] for facet in facets}
    if not parts:
        return out
    for key, value, count, _rank in sorted(session.execute(sa.union_all(*parts)), key=lambda r: (r.k, r.rk)):
        out[key].append((str(value), int(count)))
    return out


def gallery_distributions(session: Session, c: PersonaCriteria, *, top: int = 15) -> dict[str, Any]:
    """Distributions of the filtered view: age in 10-year buckets (13-19, 20-29, ...), gender, ethnicity,
    the top job titles and current cities."""
    conds = where_clauses(session, c)
    start = sa.case((R.age < 20, 13), else_=(R.age // 10) * 10)
    inner = sa.select(start.label("b")).select_from(R).where(*conds).subquery()
    n = sa.func.count().label("n")
    counts = {b: int(k) for b, k in session.execute(sa.select(inner.c.b, n).group_by(inner.c.b))}
    unknown = counts.pop(None, 0)
    age: list[tuple[str, int]] = []
    if counts:
        low, high = min(counts), max(counts)
        starts = [13] if low < 20 else []
        starts += list(range(max(20, low // 10 * 10), high + 1, 10))
        for s in starts:
            age.append((f"{s}-{19 if s == 13 else s + 9}", counts.get(s, 0)))
    if unknown:
        age.append(("unknown", unknown))
    return {
        "age": age,
        "gender": _value_counts(session, gender_bucket(R.gender), conds, 50),
        "ethnicity": _value_counts(session, R.ethnicity, conds, 50),
        "job_title": _value_counts(session, R.job_title, conds, top),
        "current_city": _value_counts(session, R.current_city, conds, top),
    }
