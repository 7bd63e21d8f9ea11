"""Gallery queries: server-side filter, facet counts, sort and paging of personas, curation, export streams.

Visibility is part of every statement: ``PersonaCriteria.viewer_id`` joins the persona to its task and keeps
only that owner's tasks (``None`` = every task: administrators and the command line). A view's filters arrive
as generic ``Condition``s naming a column and a test (the gallery's filters are declared once, in
``pipeline.outputs.browse``). Everything here runs on SQLite and PostgreSQL; the two differences (unnesting
JSON arrays, Unicode case folding) are handled in ``_array_elements`` and ``_search_text``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias, cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

from db.models import GENDERS, GenerationResult, GenerationTask, SavedView, User, utcnow

__all__ = [
    "FILTER_EXPRESSIONS",
    "GALLERY_PERSONA_FIELDS",
    "GALLERY_SORT_COLUMNS",
    "GALLERY_TEXT_FIELDS",
    "Condition",
    "Facet",
    "PersonaCriteria",
    "delete_saved_view",
    "gallery_bulk_update",
    "gallery_count",
    "gallery_distributions",
    "gallery_export_rows",
    "gallery_facets",
    "gallery_ids_and_tags",
    "gallery_page",
    "gallery_persona",
    "gallery_task_choices",
    "gallery_tasks_info",
    "gallery_update_persona",
    "gallery_view_version",
    "gallery_visible_task_ids",
    "list_saved_views",
    "save_view",
    "set_persona_tags",
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
GALLERY_SORT_COLUMNS: tuple[str, ...] = ("batch_number", "created_at", "lastname", "age", "rating", "updated_at")
NAMED_GENDERS = tuple(g for g in GENDERS if g != "other")  # stored as they are; any other value counts as "other"
TESTS = ("in", "any", "empty", "min", "max", "is", "words")


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


# --- helpers -----------------------------------------------------------------------------------------------


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def _py_lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


def _search_text(session: Session, terms: list[str]) -> sa.ColumnElement[Any]:
    """The searchable fields as one lower-cased text (newline-separated: a term never spans two fields).

    SQLite's ``LIKE`` already ignores ASCII case, so ASCII terms use it directly (fast, in C); other terms go
    through a Unicode-aware Python ``lower`` registered on the connection (SQLite's own folds ASCII only).
    """
    joined: sa.ColumnElement[Any] = sa.func.coalesce(getattr(R, GALLERY_TEXT_FIELDS[0]), "")
    for name in GALLERY_TEXT_FIELDS[1:]:
        joined = joined + "\n" + sa.func.coalesce(getattr(R, name), "")
    if _dialect(session) == "sqlite":
        if all(term.isascii() for term in terms):
            return joined
        driver = session.connection().connection.driver_connection
        if driver is not None:
            driver.create_function("adg_lower", 1, _py_lower, deterministic=True)
            return sa.func.adg_lower(joined)
    return sa.func.lower(joined)


def _text_matches(session: Session, terms: list[str]) -> list[sa.ColumnElement[bool]]:
    """One condition per term: it occurs (case-insensitively) in one of ``GALLERY_TEXT_FIELDS``.

    On SQLite with ASCII terms, an OR of one ``LIKE`` per field (SQLite's ``LIKE`` ignores ASCII case): it
    stops at the first field that matches and builds no concatenated text. A term holds no whitespace, so it
    never spans two fields either way.
    """
    if _dialect(session) == "sqlite" and all(term.isascii() for term in terms):
        return [
            sa.or_(*(getattr(R, name).like(_like_pattern(term), escape="\\") for name in GALLERY_TEXT_FIELDS))
            for term in terms
        ]
    text = _search_text(session, terms)
    return [text.like(_like_pattern(term), escape="\\") for term in terms]


def _like_pattern(term: str) -> str:
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _is_json_array(session: Session, column: Col) -> sa.ColumnElement[bool]:
    typeof = sa.func.jsonb_typeof if _dialect(session) == "postgresql" else sa.func.json_type
    return cast(sa.ColumnElement[bool], typeof(column) == "array")


def _safe_tags(session: Session, column: Col) -> sa.ColumnElement[Any]:
    """The tags column as a JSON array whatever is stored (SQL NULL, JSON null, a scalar)."""
    empty = "'[]'::jsonb" if _dialect(session) == "postgresql" else "'[]'"
    return sa.case((_is_json_array(session, column), column), else_=sa.literal_column(empty))


def _array_elements(session: Session, array: Any) -> Any:
    """A table-valued function with one ``value`` row per element of the JSON array ``array``."""
    if _dialect(session) == "postgresql":
        return sa.func.jsonb_array_elements_text(array).table_valued("value")
    return sa.func.json_each(array).table_valued("value")


def _tag_values(session: Session, column: Col) -> Any:
    """A table-valued function with one ``value`` row per tag of ``column`` (correlated to its row)."""
    return _array_elements(session, _safe_tags(session, column))


def _gender_bucket(column: Col) -> sa.ColumnElement[Any]:
    return sa.case((column.in_(NAMED_GENDERS), column), else_=sa.literal_column("'other'"))


FILTER_EXPRESSIONS: dict[str, Callable[[], Col]] = {
    # computed values a filter or facet may name as its column
    "gender": lambda: _gender_bucket(R.gender),  # m, f or other
}


def _expression(column: str) -> Col:
    """The SQL expression a ``Condition`` or ``Facet`` column names."""
    if column in FILTER_EXPRESSIONS:
        return FILTER_EXPRESSIONS[column]()
    table, name = (T, column[len("task."):]) if column.startswith("task.") else (R, column)
    if name not in table.__table__.c:
        raise ValueError(f"no gallery column {column!r}")
    return cast(Col, getattr(table, name))


def _is_array(column: str) -> bool:
    """Whether ``column`` is a persona's JSON array of texts (its elements are the values)."""
    return column in R.__table__.c and isinstance(R.__table__.c[column].type, sa.JSON)


def _condition_sql(session: Session, cond: Condition) -> sa.ColumnElement[bool]:
    """The SQL of one condition (see ``Condition`` for the tests)."""
    if cond.test == "words":
        return sa.and_(*_text_matches(session, str(cond.value or "").lower().split()))
    column = _expression(cond.column)
    if cond.test == "in":
        values = tuple(cond.value or ())
        named = [v for v in values if v is not None]
        options = [column.in_(named)] if named else []
        if None in values:
            options.append(column.is_(None))
        return sa.or_(*options) if options else sa.false()
    if cond.test in ("any", "empty"):
        elements = _tag_values(session, column)
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


def _facet_filters(session: Session, c: PersonaCriteria) -> dict[str, sa.ColumnElement[bool]]:
    """The condition of each active facet filter, by its facet key. A task column's condition is on
    ``generation_tasks`` (the facet counts join it); ``_conditions`` puts it in its task subquery instead."""
    return {cond.facet: _condition_sql(session, cond) for cond in c.conditions if cond.facet}


def _conditions(
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
        (task_conds if cond.column.startswith("task.") else conds).append(_condition_sql(session, cond))
    if task_conds:
        conds.insert(0, R.task_id.in_(sa.select(T.id).where(*task_conds)))
    return conds


def _joined(query: AnySelect) -> AnySelect:
    return query.select_from(R).join(T, T.id == R.task_id)


def _visible_tasks_clause(viewer_id: int | None) -> sa.ColumnElement[bool]:
    return sa.true() if viewer_id is None else T.user_id == viewer_id


# --- tasks -------------------------------------------------------------------------------------------------


def gallery_visible_task_ids(session: Session, viewer_id: int | None, task_ids: Sequence[str]) -> set[str]:
    """Which of ``task_ids`` exist and are visible to ``viewer_id`` (``None``: any owner)."""
    if not task_ids:
        return set()
    query = sa.select(T.task_id).where(T.task_id.in_(list(task_ids)), _visible_tasks_clause(viewer_id))
    return set(session.scalars(query))


def gallery_task_choices(
    session: Session, viewer_id: int | None, *, clip: int = 80, limit: int = 1000
) -> list[dict[str, Any]]:
    """Tasks a viewer may browse, newest first, with their persona counts (two tables, one query)."""
    counts = sa.select(R.task_id.label("pk"), sa.func.count().label("n")).group_by(R.task_id).subquery()
    query = (
        sa.select(
            T.task_id,
            sa.func.substr(T.persona_description, 1, clip + 1).label("description"),
            T.status,
            T.created_at,
            T.bio_language,
            T.number_to_generate,
            T.images_per_persona,
            User.email,
            sa.func.coalesce(counts.c.n, 0).label("n"),
        )
        .join(User, User.id == T.user_id)
        .outerjoin(counts, counts.c.pk == T.id)
        .where(_visible_tasks_clause(viewer_id))
        .order_by(T.created_at.desc(), T.id.desc())
        .limit(limit)
    )
    out = []
    for row in session.execute(query):
        description = " ".join((row.description or "").split())
        if len(description) > clip:
            description = description[: clip - 1].rstrip() + "…"
        out.append(
            {
                "task_id": row.task_id,
                "description": description,
                "status": row.status,
                "created_at": row.created_at,
                "language": row.bio_language,
                "number_to_generate": row.number_to_generate,
                "images_per_persona": row.images_per_persona,
                "owner": row.email,
                "count": int(row.n),
                "personas": int(row.n),  # the same number, under the name the pages read
            }
        )
    return out


def gallery_tasks_info(session: Session, c: PersonaCriteria) -> list[dict[str, Any]]:
    """The tasks a filter spans (owner, explicit ids and conditions on task columns only), with their config
    snapshots."""
    conds: list[sa.ColumnElement[bool]] = [_visible_tasks_clause(c.viewer_id)]
    if c.task_ids:
        conds.append(T.task_id.in_(c.task_ids))
    conds += [_condition_sql(session, cond) for cond in c.conditions if cond.column.startswith("task.")]
    query = (
        sa.select(
            T.task_id,
            T.persona_description,
            T.bio_language,
            T.number_to_generate,
            T.images_per_persona,
            T.seed,
            T.status,
            T.created_at,
            T.completed_at,
            T.rerun_of,
            T.config_snapshot,
            T.started_at,
            T.attempts,
            T.error_log,
            T.targets,
            T.targets_report,
            T.quality_summary,
        )
        .where(*conds)
        .order_by(T.created_at, T.id)
    )
    return [dict(row._mapping) for row in session.execute(query)]


def gallery_view_version(session: Session, c: PersonaCriteria) -> str:
    """A text that changes when a persona of the view is added, removed or updated, or one of its tasks changes:
    a file built from the view is still current while this is the same."""
    personas = session.execute(
        sa.select(sa.func.count(), sa.func.max(R.updated_at), sa.func.max(R.id), sa.func.sum(R.id))
        .select_from(R)
        .where(*_conditions(session, c))
    ).one()
    task_conds: list[sa.ColumnElement[bool]] = [_visible_tasks_clause(c.viewer_id)]
    if c.task_ids:
        task_conds.append(T.task_id.in_(c.task_ids))
    tasks = session.execute(
        sa.select(sa.func.count(), sa.func.max(T.updated_at), sa.func.sum(T.id)).where(*task_conds)
    ).one()
    return "|".join(str(value) for value in (*personas, *tasks))


# --- the gallery view ---------------------------------------------------------------------------------------


def _row_columns() -> list[sa.ColumnElement[Any]]:
    thumb = R.image_meta[("images", 0, "thumb_key")].as_string()
    return [
        R.id,
        T.task_id.label("task_id"),
        R.batch_number,
        R.slot,
        R.status,
        R.error,
        R.favorite,
        R.tags,
        R.rating,
        R.curation,
        R.quality_flags,
        R.image_count,
        R.base_image_url,
        thumb.label("thumb_key"),
        T.bio_language.label("language"),
        R.created_at,
        R.updated_at,
        *(getattr(R, name) for name in GALLERY_PERSONA_FIELDS),
    ]


def _order_by(sort_column: str, descending: bool, nulls: bool = True) -> list[sa.ColumnElement[Any]]:
    """The ORDER BY of a sort column, ending with the persona id so paging is stable. ``nulls=False``: the
    filter excludes NULLs of an age/rating sort, so no NULLs-last key is needed (a plain ``age DESC, id DESC``)."""

    def direction(col: Col) -> sa.ColumnElement[Any]:
        return col.desc() if descending else col.asc()

    if sort_column == "created_at":
        keys: list[Col] = [R.created_at, R.id]
    elif sort_column == "updated_at":
        keys = [R.updated_at, R.id]
    elif sort_column == "lastname":
        keys = [sa.func.lower(R.lastname), sa.func.lower(R.firstname), R.id]
    elif sort_column in ("age", "rating"):
        col = getattr(R, sort_column)
        # NULLs last in both directions, identically on SQLite and PostgreSQL.
        first = [sa.case((col.is_(None), 1), else_=0).asc()] if nulls else []
        return [*first, direction(col), direction(R.id)]
    else:  # batch_number: the generation order
        keys = [R.task_id, R.batch_number, R.slot, R.id]
    return [direction(k) for k in keys]


def _with_thumb(row: Mapping[Any, Any]) -> dict[str, Any]:
    data = dict(row)
    data["tags"] = list(data.get("tags") or [])
    data["quality_flags"] = list(data.get("quality_flags") or [])
    data["thumb_uri"] = data.pop("thumb_key", None) or data.get("base_image_url")
    return data


def _excludes_nulls(c: PersonaCriteria, sort_column: str) -> bool:
    """Whether a bound on the sort column already excludes its unset values."""
    return any(cond.test in ("min", "max") and cond.column == sort_column for cond in c.conditions)


def gallery_count(session: Session, c: PersonaCriteria) -> int:
    """How many personas match (on generation_results alone: ``_conditions`` needs no join)."""
    return int(session.scalar(sa.select(sa.func.count()).select_from(R).where(*_conditions(session, c))) or 0)


def gallery_page(
    session: Session, c: PersonaCriteria, *, sort_column: str, descending: bool, offset: int, limit: int
) -> list[dict[str, Any]]:
    """One page of persona rows (no bios trimmed, no image lists: ``thumb_uri`` is the first thumbnail)."""
    query = (
        _joined(sa.select(*_row_columns()))
        .where(*_conditions(session, c))
        .order_by(*_order_by(sort_column, descending, nulls=not _excludes_nulls(c, sort_column)))
        .offset(max(0, offset))
        .limit(max(1, limit))
    )
    return [_with_thumb(row._mapping) for row in session.execute(query)]


def _value_counts(
    session: Session, value: Col, conds: list[sa.ColumnElement[bool]], limit: int
) -> list[tuple[str, int]]:
    """Top ``limit`` values of ``value`` with their counts; joins generation_tasks only when ``value`` is one of
    its columns (the language), since ``conds`` need no join."""
    expression = cast(sa.ColumnElement[Any], value)
    query = sa.select(expression.label("v"), sa.func.count().label("n"))
    query = _joined(query) if T.__table__ in query.get_final_froms() else query.select_from(R)
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
    is_array = _is_json_array(session, column)
    inner = sa.select(R.id, column.label("tags")).select_from(R).where(*conds, is_array).subquery()
    tv = _array_elements(session, inner.c.tags)
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
        conds = _conditions(session, c, skip=(facet.key,))
        if _is_array(facet.column):
            out[facet.key] = _tag_counts(session, conds, limit, getattr(R, facet.column))
        else:
            out[facet.key] = _value_counts(session, _expression(facet.column), conds, limit)
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
        if _is_array(facet.column):
            # JSON arrays only (NULL otherwise, which unnests to no row): PostgreSQL refuses to unnest a non-array
            array = getattr(R, facet.column)
            columns.append(sa.case((_is_json_array(session, array), array)).label(f"v_{facet.key}"))
        else:
            columns.append(cast(sa.ColumnElement[Any], _expression(facet.column)).label(f"v_{facet.key}"))
    columns += [cond.label(f"ok_{name}") for name, cond in filters.items()]
    rows = (
        _joined(sa.select(*columns))
        .where(*_conditions(session, c, facets=False))
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
        if _is_array(facet.column):
            elements = _array_elements(session, value)
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
    conds = _conditions(session, c)
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
        "gender": _value_counts(session, _gender_bucket(R.gender), conds, 50),
        "ethnicity": _value_counts(session, R.ethnicity, conds, 50),
        "job_title": _value_counts(session, R.job_title, conds, top),
        "current_city": _value_counts(session, R.current_city, conds, top),
    }


# --- one persona ----------------------------------------------------------------------------------------------


def gallery_persona(session: Session, viewer_id: int | None, result_id: int) -> dict[str, Any] | None:
    """Every field of one persona with its images and task (no config snapshot); None if not visible."""
    query = _joined(
        sa.select(
            R,
            T.task_id.label("task_code"),
            T.persona_description,
            T.bio_language,
            T.status.label("task_status"),
            T.created_at.label("task_created_at"),
            T.number_to_generate,
            T.images_per_persona,
            T.seed,
            T.user_id,
        )
    ).where(R.id == result_id, _visible_tasks_clause(viewer_id))
    row = session.execute(query).first()
    if row is None:
        return None
    result: GenerationResult = row[0]
    data: dict[str, Any] = {name: getattr(result, name) for name in GALLERY_PERSONA_FIELDS}
    meta = result.image_meta or {}
    thumbs = [m.get("thumb_key") for m in meta.get("images", []) if isinstance(m, dict)]
    data.update(
        id=result.id,
        task_id=row.task_code,
        batch_number=result.batch_number,
        slot=result.slot,
        status=result.status,
        error=result.error,
        attempts=result.attempts,
        favorite=bool(result.favorite),
        tags=list(result.tags or []),
        rating=result.rating,
        curation=result.curation,
        quality=result.quality,
        quality_flags=list(result.quality_flags or []),
        image_count=result.image_count,
        base_image_url=result.base_image_url,
        images=list(result.images or []),
        image_meta=meta,
        thumb_uri=(thumbs[0] if thumbs and thumbs[0] else None) or result.base_image_url,
        language=row.bio_language,
        created_at=result.created_at,
        updated_at=result.updated_at,
        task={
            "task_id": row.task_code,
            "description": row.persona_description,
            "language": row.bio_language,
            "status": row.task_status,
            "created_at": row.task_created_at,
            "number_to_generate": row.number_to_generate,
            "images_per_persona": row.images_per_persona,
            "seed": row.seed,
            "user_id": row.user_id,
        },
    )
    return data


def gallery_update_persona(session: Session, viewer_id: int | None, result_id: int, **values: Any) -> bool:
    """Set curation columns of one visible persona; False when it does not exist or is not visible."""
    visible = sa.select(T.id).where(_visible_tasks_clause(viewer_id))
    result = session.execute(
        sa.update(R)
        .where(R.id == result_id, R.task_id.in_(visible))
        .values(**values, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


def gallery_bulk_update(session: Session, c: PersonaCriteria, **values: Any) -> int:
    """Set curation columns (favorite, curation) on every persona of the filtered view; returns how many."""
    ids = _joined(sa.select(R.id)).where(*_conditions(session, c)).scalar_subquery()
    result = session.execute(
        sa.update(R).where(R.id.in_(ids)).values(**values, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def gallery_ids_and_tags(session: Session, c: PersonaCriteria) -> list[tuple[int, list[str]]]:
    rows = session.execute(_joined(sa.select(R.id, R.tags)).where(*_conditions(session, c)).order_by(R.id))
    return [(int(i), list(t) if isinstance(t, list) else []) for i, t in rows]


def set_persona_tags(session: Session, result_id: int, tags: list[str]) -> None:
    session.execute(sa.update(R).where(R.id == result_id).values(tags=tags, updated_at=utcnow())
                    .execution_options(synchronize_session=False))


def list_saved_views(session: Session, user_id: int) -> list[tuple[str, dict[str, str]]]:
    rows = session.execute(sa.select(SavedView.name, SavedView.params).where(SavedView.user_id == user_id)
                           .order_by(SavedView.name))
    return [(str(n), dict(p or {})) for n, p in rows]


def save_view(session: Session, user_id: int, name: str, params: dict[str, str]) -> None:
    existing = session.scalar(sa.select(SavedView).where(SavedView.user_id == user_id, SavedView.name == name))
    if existing is None:
        session.add(SavedView(user_id=user_id, name=name, params=params, created_at=utcnow()))
    else:
        existing.params = params


def delete_saved_view(session: Session, user_id: int, name: str) -> bool:
    result = session.execute(sa.delete(SavedView).where(SavedView.user_id == user_id, SavedView.name == name))
    return bool(getattr(result, "rowcount", 0))


# --- exports --------------------------------------------------------------------------------------------------


def _export_columns() -> list[sa.ColumnElement[Any]]:
    """The export's columns under their export names (``pipeline.outputs.exports.EXPORT_COLUMNS``), nothing else."""
    return [
        T.task_id.label("task_id"),
        R.id.label("persona_id"),
        R.batch_number,
        R.slot,
        R.status,
        R.error,
        *(getattr(R, name) for name in GALLERY_PERSONA_FIELDS),
        T.bio_language.label("language"),
        R.favorite,
        R.tags,
        R.rating,
        R.image_count,
        R.curation,
        R.quality_flags,
        R.quality[("identity", "score")].as_float().label("identity_score"),
        R.quality[("identity", "worst")].as_float().label("identity_worst_distance"),
        R.quality[("identity", "base_faces")].as_integer().label("base_faces"),
        R.quality[("identity", "leakage_distance")].as_float().label("face_leakage_distance"),
        R.base_image_url.label("base_image"),
        R.images,
    ]


def gallery_export_rows(
    session: Session, c: PersonaCriteria, *, chunk: int = 500, with_meta: bool = True
) -> Iterator[dict[str, Any]]:
    """Every persona of the view in generation order, streamed ``chunk`` rows at a time (server-side cursor on
    PostgreSQL), as the export's columns (the identity check's scores read in SQL from ``quality``).
    ``with_meta`` adds the whole ``image_meta`` and ``quality`` documents (for the formats that carry images):
    decoding them is most of the cost of a table export."""
    meta = [R.image_meta, R.quality] if with_meta else []
    query = (
        _joined(sa.select(*_export_columns(), *meta))
        .where(*_conditions(session, c))
        .order_by(*_order_by("batch_number", False))
    )
    # On the session's connection (Core rows, no ORM loading machinery per row), streamed.
    for row in session.connection().execution_options(yield_per=chunk).execute(query):
        data = dict(row._mapping)
        if with_meta:
            data["image_meta"] = data.get("image_meta") or {}
        yield data
