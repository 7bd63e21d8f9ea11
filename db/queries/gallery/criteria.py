"""A gallery view in database terms and the WHERE clauses it becomes.

``PersonaCriteria`` is who looks, which tasks, and every other filter as a generic ``Condition`` naming a column
and a test (the gallery's filters are declared once, in ``pipeline.outputs.browse``). ``where_clauses`` turns it
into SQL that the page, facet, curation and export queries all share. Visibility is part of it: ``viewer_id``
keeps only that owner's tasks (``None`` = every task: administrators and the command line). The two differences
between SQLite and PostgreSQL (unnesting JSON arrays, Unicode case folding) are handled in ``array_elements``
and ``_search_text``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, TypeAlias, cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

from db.models import GENDERS, GenerationResult, GenerationTask

__all__ = [
    "FILTER_EXPRESSIONS",
    "GALLERY_PERSONA_FIELDS",
    "GALLERY_TEXT_FIELDS",
    "Condition",
    "Facet",
    "PersonaCriteria",
]

R = GenerationResult
T = GenerationTask
Col: TypeAlias = "sa.sql.elements.SQLCoreOperations[Any]"  # a column, an ORM attribute or an expression
AnySelect: TypeAlias = "sa.Select[*tuple[Any, ...]]"

GALLERY_PERSONA_FIELDS: tuple[str, ...] = (
    "firstname",
    "lastname",
    "gender",
    "ethnicity",
    "age",
    "bio_facebook",
    "bio_instagram",
    "bio_x",
    "bio_tiktok",
    "job_title",
    "workplace",
    "edu_establishment",
    "edu_study",
    "current_city",
    "current_state",
    "prev_city",
    "prev_state",
    "about",
)
GALLERY_TEXT_FIELDS: tuple[str, ...] = (
    "firstname",
    "lastname",
    "job_title",
    "workplace",
    "edu_establishment",
    "edu_study",
    "bio_facebook",
    "bio_instagram",
    "bio_x",
    "bio_tiktok",
    "about",
)
NAMED_GENDERS = tuple(g for g in GENDERS if g != "other")  # stored as they are; any other value counts as "other"


@dataclass(frozen=True)
class Condition:
    """One active filter of a gallery view in database terms.

    ``column`` names what is tested: a key of ``FILTER_EXPRESSIONS``, ``task.<column>`` (a column of the
    persona's task) or a ``generation_results`` column. ``test`` says how ``value`` is applied:

    - ``in``: the value is one of ``value`` (a tuple; a ``None`` in it matches an unset column);
    - ``any``: the JSON array column holds one of ``value``; ``empty``: it holds nothing (no ``value``);
    - ``min`` / ``max``: the value is at least / at most ``value`` (an unset value never passes);
    - ``is``: the boolean column equals ``value``;
    - ``words``: every whitespace-separated word of ``value`` occurs, ignoring case, in one of
      ``GALLERY_TEXT_FIELDS`` (``column`` is not used).

    ``facet`` names the facet this condition narrows: that facet's own counts leave it out (standard faceting).
    """

    column: str
    test: str
    value: Any = None
    facet: str | None = None


@dataclass(frozen=True)
class Facet:
    """A facet of the gallery: the counts of each value of ``column`` (as in ``Condition``), under ``key``.
    A JSON array column (tags, quality flags) counts each element."""

    key: str
    column: str


@dataclass(frozen=True)
class PersonaCriteria:
    """A gallery view in database terms: who looks, which tasks, and every other filter as a ``Condition``
    (conditions combine with AND). Empty ``task_ids`` means every task the viewer may see."""

    viewer_id: int | None = None
    task_ids: tuple[str, ...] = ()
    conditions: tuple[Condition, ...] = ()

    def words(self) -> list[str]:
        """The lower-cased search words of the view (empty without a text search)."""
        return [w for c in self.conditions if c.test == "words" for w in str(c.value or "").lower().split()]


# --- SQL helpers ---------------------------------------------------------------------------------------------


def dialect(session: Session) -> str:
    """The database's dialect name: "sqlite" or "postgresql"."""
    return session.get_bind().dialect.name


def _py_lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


def lower_text(session: Session, text: Col) -> sa.ColumnElement[Any]:
    """``text`` lower-cased. SQLite's own ``lower`` folds ASCII only, so there it is Python's, registered on the
    connection; PostgreSQL's follows the database's locale."""
    if dialect(session) == "sqlite":
        driver = session.connection().connection.driver_connection
        if driver is not None:
            driver.create_function("adg_lower", 1, _py_lower, deterministic=True)
            return sa.func.adg_lower(text)
    return sa.func.lower(text)


def _search_text(session: Session, terms: list[str]) -> sa.ColumnElement[Any]:
    """The searchable fields as one lower-cased text (newline-separated: a term never spans two fields).

    SQLite's ``LIKE`` already ignores ASCII case, so ASCII terms use it directly (fast, in C); other terms go
    through a Unicode-aware Python ``lower`` registered on the connection (SQLite's own folds ASCII only).
    """
    text: sa.ColumnElement[Any] = sa.func.coalesce(getattr(R, GALLERY_TEXT_FIELDS[0]), "")
    for name in GALLERY_TEXT_FIELDS[1:]:
        text = text + "\n" + sa.func.coalesce(getattr(R, name), "")
    if dialect(session) == "sqlite" and all(term.isascii() for term in terms):
        return text
    return lower_text(session, text)


def _text_matches(session: Session, terms: list[str]) -> list[sa.ColumnElement[bool]]:
    """One condition per term: it occurs (case-insensitively) in one of ``GALLERY_TEXT_FIELDS``.

    On SQLite with ASCII terms, an OR of one ``LIKE`` per field (SQLite's ``LIKE`` ignores ASCII case): it
    stops at the first field that matches and builds no concatenated text. A term holds no whitespace, so it
    never spans two fields either way.
    """
    if dialect(session) == "sqlite" and all(term.isascii() for term in terms):
        return [
            sa.or_(*(getattr(R, name).like(_like_pattern(term), escape="\\") for name in GALLERY_TEXT_FIELDS))
            for term in terms
        ]
    text = _search_text(session, terms)
    return [text.like(_like_pattern(term), escape="\\") for term in terms]


def _like_pattern(term: str) -> str:
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def is_json_array(session: Session, column: Col) -> sa.ColumnElement[bool]:
    typeof = sa.func.jsonb_typeof if dialect(session) == "postgresql" else sa.func.json_type
    return cast(sa.ColumnElement[bool], typeof(column) == "array")


def safe_tags(session: Session, column: Col) -> sa.ColumnElement[Any]:
    """The tags column as a JSON array whatever is stored (SQL NULL, JSON null, a scalar)."""
    empty = "'[]'::jsonb" if dialect(session) == "postgresql" else "'[]'"
    return sa.case((is_json_array(session, column), column), else_=sa.literal_column(empty))


def array_elements(session: Session, array: Any) -> Any:
    """A table-valued function with one ``value`` row per element of the JSON array ``array``."""
    if dialect(session) == "postgresql":
        return sa.func.jsonb_array_elements_text(array).table_valued("value")
    return sa.func.json_each(array).table_valued("value")


def tag_values(session: Session, column: Col) -> Any:
    """A table-valued function with one ``value`` row per tag of ``column`` (correlated to its row)."""
    return array_elements(session, safe_tags(session, column))


def gender_bucket(column: Col) -> sa.ColumnElement[Any]:
    return sa.case((column.in_(NAMED_GENDERS), column), else_=sa.literal_column("'other'"))


FILTER_EXPRESSIONS: dict[str, Callable[[], Col]] = {
    # computed values a filter or facet may name as its column
    "gender": lambda: gender_bucket(R.gender),  # m, f or other
}


def column_expression(column: str) -> Col:
    """The SQL expression a ``Condition`` or ``Facet`` column names."""
    if column in FILTER_EXPRESSIONS:
        return FILTER_EXPRESSIONS[column]()
    table, name = (T, column[len("task."):]) if column.startswith("task.") else (R, column)
    if name not in table.__table__.c:
        raise ValueError(f"no gallery column {column!r}")
    return cast(Col, getattr(table, name))


def is_array_column(column: str) -> bool:
    """Whether ``column`` is a persona's JSON array of texts (its elements are the values)."""
    return column in R.__table__.c and isinstance(R.__table__.c[column].type, sa.JSON)


def condition_sql(session: Session, cond: Condition) -> sa.ColumnElement[bool]:
    """The SQL of one condition (see ``Condition`` for the tests)."""
    if cond.test == "words":
        return sa.and_(*_text_matches(session, str(cond.value or "").lower().split()))
    column = column_expression(cond.column)
    if cond.test == "in":
        values = tuple(cond.value or ())
        named = [v for v in values if v is not None]
        options = [column.in_(named)] if named else []
        if None in values:
            options.append(column.is_(None))
        return sa.or_(*options) if options else sa.false()
    if cond.test in ("any", "empty"):
        elements = tag_values(session, column)
        found = sa.select(sa.literal(1)).select_from(elements)
        if cond.test == "empty":
            return ~sa.exists(found)
        return sa.exists(found.where(elements.c.value.in_(tuple(cond.value or ()))))
    if cond.test == "min":
        return cast(sa.ColumnElement[bool], column >= cond.value)
    if cond.test == "max":
        return cast(sa.ColumnElement[bool], column <= cond.value)
    if cond.test == "is":
        return column.is_(sa.true()) if cond.value else column.is_(sa.false())
    raise ValueError(f"unknown filter test {cond.test!r}")


def where_clauses(
    session: Session, c: PersonaCriteria, skip: Collection[str] = (), *, facets: bool = True
) -> list[sa.ColumnElement[bool]]:
    """WHERE clauses of ``c`` on ``generation_results`` alone (no join needed: the task-level conditions are one
    ``task_id IN (SELECT id FROM generation_tasks WHERE ...)``, which uses the task_id index), so they also fit
    a query over ``generation_results JOIN generation_tasks``.

    ``skip`` names facets whose own filters are left out (standard faceting); ``facets=False`` leaves out
    every facet filter.
    """
    conds: list[sa.ColumnElement[bool]] = []
    task_conds: list[sa.ColumnElement[bool]] = []
    if c.viewer_id is not None:
        task_conds.append(T.user_id == c.viewer_id)
    if c.task_ids:
        task_conds.append(T.task_id.in_(c.task_ids))
    for cond in c.conditions:
        if cond.facet is not None and (not facets or cond.facet in skip):
            continue
        (task_conds if cond.column.startswith("task.") else conds).append(condition_sql(session, cond))
    if task_conds:
        conds.insert(0, R.task_id.in_(sa.select(T.id).where(*task_conds)))
    return conds


def joined(query: AnySelect) -> AnySelect:
    """``query`` over personas joined to their tasks (for a task column in its SELECT)."""
    return query.select_from(R).join(T, T.id == R.task_id)


def visible_tasks(viewer_id: int | None) -> sa.ColumnElement[bool]:
    """The tasks ``viewer_id`` may see (``None``: every task), as a condition on ``generation_tasks``."""
    return sa.true() if viewer_id is None else T.user_id == viewer_id
