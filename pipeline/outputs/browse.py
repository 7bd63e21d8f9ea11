"""Gallery service: the filter (shareable as URL query parameters), pages, facet counts, distributions,
one persona's details and curation (favourite, tags, rating).

Each filter is declared once, as a field of ``GalleryFilter`` carrying its ``FilterSpec``: the column it tests,
its widget label, its URL key, its facet and how its value is read and checked. ``FILTERS`` lists them in the
order the page draws them; adding a filter is adding one field.

Everything is filtered, counted, sorted and paged in SQL (``db.queries.gallery``); visibility is part of those
statements. A user sees only their own tasks, an administrator every task. An explicit task id the user may
not see raises ``NotFoundError``, exactly like a missing one. An empty ``task_ids`` means "every task the
user may see".
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

import db.queries as q
from db.models import User
from db.session import Database
from pipeline.core.domain import GENDERS, PersonaStatus
from pipeline.core.errors import NotFoundError, ValidationError

log = logging.getLogger(__name__)

__all__ = [
    "CURATIONS",
    "FACETS",
    "FILTERS",
    "MAX_PAGE_SIZE",
    "MAX_TAGS",
    "MAX_TAG_CHARS",
    "SORTS",
    "STATUSES",
    "Curation",
    "FilterSpec",
    "GalleryFilter",
    "GalleryPage",
    "clean_tags",
    "distributions",
    "facet_counts",
    "get_persona",
    "merge_tags",
    "query_page",
    "resolve_criteria",
    "save_curation",
    "set_favorite",
    "set_rating",
    "set_tags",
    "visible_task_choices",
]

STATUSES = tuple(s.value for s in PersonaStatus)
CURATIONS = ("keep", "reject", "unset")
MAX_TAGS = 20
MAX_TAG_CHARS = 40
MAX_PAGE_SIZE = 500
MAX_LIST_ITEMS = 200  # per list in a filter read from a URL
MAX_TEXT_CHARS = 200
MAX_VALUE_CHARS = 255
MAX_TASK_ID_CHARS = 64

# label -> column. The direction is the caller's ``descending`` flag: "newest first" is
# ``sort="newest", descending=True``. Ties are broken by the persona id, so paging is stable.
SORTS: dict[str, str] = {
    "batch": "batch_number",
    "newest": "created_at",
    "name": "lastname",
    "age": "age",
    "rating": "rating",
    "updated": "updated_at",
}

FilterKind = Literal["tasks", "values", "any", "min", "max", "yes_no", "none", "words"]


@dataclass(frozen=True)
class FilterSpec:
    """Everything about one gallery filter.

    ``kind`` says what its value is and how it is tested, read from a URL and drawn:

    - ``tasks``: the task ids browsed (a list; drawn above the view, checked for visibility);
    - ``values``: a list of alternatives, one of which ``column`` must equal;
    - ``any``: a list of alternatives, one of which the JSON array ``column`` must hold;
    - ``min`` / ``max``: a whole number ``column`` must reach / not exceed (a ``min`` and a ``max`` on the same
      column are drawn as one range slider);
    - ``yes_no``: ``None`` (either), ``True`` or ``False`` for a boolean ``column``;
    - ``none``: a checkbox; when ticked the JSON array ``column`` must be empty;
    - ``words``: a text whose every word must occur in a name, job, workplace, education, bio or about text.

    ``column`` is as ``db.queries.Condition`` reads it: a persona column, ``task.<column>`` or a computed value
    (``gender``). ``facet`` is the key of its value counts (``None``: no counts). ``choices`` are the accepted
    values (lower-cased; empty: any stored value); for ``yes_no`` they are the two options' labels. ``unset``
    is the choice that stands for "no value stored". ``bounds`` limit a number read from a URL; ``widget`` is
    the slider's range, whose ends mean "no restriction".
    """

    label: str
    url_key: str
    kind: FilterKind
    column: str
    facet: str | None = None
    choices: tuple[str, ...] = ()
    unset: str | None = None
    bounds: tuple[int, int] = (0, 0)
    widget: tuple[int, int] = (0, 0)
    help: str = ""
    name: str = ""  # the GalleryFilter field, filled in by FILTERS


def _spec(label: str, url_key: str, kind: FilterKind, column: str, **options: Any) -> dict[str, FilterSpec]:
    """The metadata of a ``GalleryFilter`` field that declares its filter."""
    return {"filter": FilterSpec(label, url_key, kind, column, **options)}


@dataclass
class GalleryFilter:
    """What the gallery shows, one field per filter (its ``FilterSpec`` in the field's metadata). Within one list
    the values are alternatives (OR); filters combine with AND. An empty field restricts nothing."""

    task_ids: list[str] = field(default_factory=list, metadata=_spec("Tasks", "tasks", "tasks", "task.task_id"))
    text: str = field(default="", metadata=_spec("Search names, jobs, education, bios", "q", "words", "text"))
    genders: list[str] = field(
        default_factory=list, metadata=_spec("Gender", "gender", "values", "gender", facet="gender", choices=GENDERS)
    )
    age_min: int | None = field(
        default=None, metadata=_spec("Age", "age_min", "min", "age", bounds=(0, 150), widget=(13, 100))
    )
    age_max: int | None = field(
        default=None, metadata=_spec("Age", "age_max", "max", "age", bounds=(0, 150), widget=(13, 100))
    )
    ethnicities: list[str] = field(
        default_factory=list, metadata=_spec("Ethnicity", "ethnicity", "values", "ethnicity", facet="ethnicity")
    )
    languages: list[str] = field(
        default_factory=list,
        metadata=_spec("Language", "language", "values", "task.bio_language", facet="language"),
    )
    cities: list[str] = field(
        default_factory=list, metadata=_spec("City", "city", "values", "current_city", facet="city")
    )
    states: list[str] = field(
        default_factory=list, metadata=_spec("State / region", "state", "values", "current_state", facet="state")
    )
    statuses: list[str] = field(
        default_factory=list,
        metadata=_spec("Status", "status", "values", "status", facet="status", choices=STATUSES),
    )
    tags: list[str] = field(default_factory=list, metadata=_spec("Tags", "tags", "any", "tags", facet="tags"))
    curations: list[str] = field(
        default_factory=list,
        metadata=_spec("Curation", "curation", "values", "curation", choices=CURATIONS, unset="unset"),
    )
    flags: list[str] = field(
        default_factory=list, metadata=_spec("Quality flags", "flags", "any", "quality_flags", facet="flags")
    )
    unflagged: bool = field(default=False, metadata=_spec(
        "Only personas no check flagged", "clean", "none", "quality_flags",
        help="Duplicates, over-long bios, wrong language, near-duplicate images, and identity problems "
             "(inconsistent or duplicate faces, no face, leakage) are excluded; downloads follow this filter",
    ))
    favorite: bool | None = field(default=None, metadata=_spec(
        "Favourites", "favorite", "yes_no", "favorite", choices=("only favourites", "not favourites")
    ))
    min_rating: int | None = field(
        default=None, metadata=_spec("Minimum rating", "min_rating", "min", "rating", bounds=(1, 5), widget=(0, 5))
    )

    def to_query_params(self) -> dict[str, str]:
        """Compact query parameters: lists comma-joined (a comma inside a value is ``%2C``), empty ones omitted."""
        params: dict[str, str] = {}
        for spec in FILTERS:
            text = _to_param(spec, getattr(self, spec.name))
            if text:
                params[spec.url_key] = text
        return params

    @classmethod
    def from_query_params(cls, params: Mapping[str, str | list[str]]) -> GalleryFilter:
        """The filter of a URL. Tolerant: unknown keys and bad values are ignored; never raises."""
        flt = cls()
        try:
            raw = dict(params.items())
        except Exception:  # a foreign mapping that misbehaves: an empty filter is the safe answer
            return flt
        for spec in FILTERS:
            value = raw.get(spec.url_key)
            parts = [v for v in value if isinstance(v, str)] if isinstance(value, list | tuple) else [value]
            parts = [p for p in parts if isinstance(p, str)]
            if parts:
                setattr(flt, spec.name, _from_param(spec, parts))
        return flt


FILTERS: tuple[FilterSpec, ...] = tuple(
    replace(f.metadata["filter"], name=f.name) for f in fields(GalleryFilter)
)
FACETS: tuple[q.Facet, ...] = tuple(q.Facet(s.facet, s.column) for s in FILTERS if s.facet)
_LIST_KINDS = ("tasks", "values", "any")


def _encode_item(value: str) -> str:
    return value.replace("%", "%25").replace(",", "%2C")


def _decode_item(value: str) -> str:
    return value.replace("%2C", ",").replace("%2c", ",").replace("%25", "%")


def _clean_list(values: Any) -> list[str]:
    """Stripped, de-duplicated, order kept; non-strings and empty strings dropped (inner spaces are kept: they
    must match stored values exactly)."""
    out: list[str] = []
    seen: set[str] = set()
    for value in values or []:
        if not isinstance(value, str):
            continue
        item = value.strip()[:MAX_VALUE_CHARS]
        if item and item not in seen:
            seen.add(item)
            out.append(item)
    return out[:MAX_LIST_ITEMS]


def _checked_list(spec: FilterSpec, values: Any) -> list[str]:
    """The cleaned values of a list filter that its spec accepts."""
    items = _clean_list(values)
    if spec.kind == "tasks":
        return [t for t in items if t.isprintable() and len(t) <= MAX_TASK_ID_CHARS]
    if spec.choices:
        return [v for v in (i.lower() for i in items) if v in spec.choices]
    return items


def _parse_int(value: str, low: int, high: int) -> int | None:
    try:
        number = int(value.strip())
    except (ValueError, AttributeError):
        return None
    return number if low <= number <= high else None


def _parse_bool(value: str) -> bool | None:
    text = value.strip().lower()
    if text in ("1", "true", "yes", "on", "y"):
        return True
    if text in ("0", "false", "no", "off", "n"):
        return False
    return None


def _clean_text(value: Any) -> str:
    return " ".join(str(value or "").split())[:MAX_TEXT_CHARS]


def _to_param(spec: FilterSpec, value: Any) -> str:
    """A filter's value as its query parameter ("" when it restricts nothing)."""
    if spec.kind in _LIST_KINDS:
        return ",".join(_encode_item(v) for v in _clean_list(value))
    if spec.kind == "words":
        return " ".join(str(value or "").split())
    if spec.kind == "yes_no":
        return "" if value is None else ("1" if value else "0")
    if spec.kind == "none":
        return "1" if value else ""
    return "" if value is None else str(int(value))


def _from_param(spec: FilterSpec, parts: list[str]) -> Any:
    """A filter's value read from its query parameter(s): repeated lists add up, the last scalar wins."""
    if spec.kind in _LIST_KINDS:
        return _checked_list(spec, [_decode_item(item) for part in parts for item in part.split(",")])
    if spec.kind == "words":
        return _clean_text(parts[-1])
    if spec.kind == "yes_no":
        return _parse_bool(parts[-1])
    if spec.kind == "none":
        return _parse_bool(parts[-1]) is True
    return _parse_int(parts[-1], *spec.bounds)


def _condition(spec: FilterSpec, value: Any) -> q.Condition | None:
    """The database condition of one filter's value; ``None`` when it restricts nothing."""
    if spec.kind in ("values", "any"):
        wanted = _clean_list(value)
        if not wanted:
            return None
        items: tuple[str | None, ...] = tuple(_checked_list(spec, wanted))
        if spec.unset is not None:
            items = tuple(None if v == spec.unset else v for v in items)
        return q.Condition(spec.column, "in" if spec.kind == "values" else "any", items, spec.facet)
    if spec.kind == "words":
        text = _clean_text(value)
        return q.Condition(spec.column, "words", text) if text else None
    if spec.kind in ("min", "max"):
        return q.Condition(spec.column, spec.kind, value) if isinstance(value, int) else None
    if spec.kind == "yes_no":
        return q.Condition(spec.column, "is", value) if isinstance(value, bool) else None
    if spec.kind == "none":
        return q.Condition(spec.column, "empty") if value is True else None
    return None  # tasks: part of the criteria themselves


@dataclass
class GalleryPage:
    rows: list[dict[str, Any]]
    total: int
    page: int
    page_size: int
    pages: int


def _viewer_id(user: User) -> int | None:
    return None if user.is_admin else user.id


def _criteria(session: Any, user: User | None, flt: GalleryFilter) -> q.PersonaCriteria:
    """Database criteria of a filter; explicit task ids the user may not see raise ``NotFoundError``."""
    viewer = None if user is None else _viewer_id(user)
    task_ids = _clean_list(flt.task_ids)
    if task_ids:
        found = q.gallery_visible_task_ids(session, viewer, task_ids)
        missing = [t for t in task_ids if t not in found]
        if missing:
            raise NotFoundError(f"no task {missing[0]!r}")
    conditions = (_condition(spec, getattr(flt, spec.name)) for spec in FILTERS)
    return q.PersonaCriteria(
        viewer_id=viewer, task_ids=tuple(task_ids), conditions=tuple(c for c in conditions if c is not None)
    )


def resolve_criteria(db: Database, user: User | None, flt: GalleryFilter) -> q.PersonaCriteria:
    """The database criteria of ``flt`` for ``user`` (``None``: no visibility restriction; the CLI)."""
    with db.session() as session:
        return _criteria(session, user, flt)


def visible_task_choices(db: Database, user: User) -> list[dict[str, Any]]:
    """Tasks the user may browse, newest first: task_id, description (clipped), status, created_at, count and
    personas (both: personas stored), language, number_to_generate, images_per_persona, owner (e-mail)."""
    with db.session() as session:
        return q.gallery_task_choices(session, _viewer_id(user))


def query_page(
    db: Database,
    user: User,
    flt: GalleryFilter,
    *,
    sort: str = "batch",
    descending: bool = False,
    page: int = 1,
    page_size: int = 50,
) -> GalleryPage:
    """One page of the filtered view. ``sort`` is a ``SORTS`` label (a column name is accepted too; anything
    else falls back to "batch"). ``page`` is clamped to 1..pages."""
    column = SORTS.get(sort, sort if sort in SORTS.values() else "batch_number")
    size = max(1, min(int(page_size), MAX_PAGE_SIZE))
    with db.session() as session:
        criteria = _criteria(session, user, flt)
        total = q.gallery_count(session, criteria)
        pages = max(1, math.ceil(total / size))
        number = max(1, min(int(page), pages))
        rows = (
            q.gallery_page(
                session, criteria, sort_column=column, descending=descending, offset=(number - 1) * size, limit=size
            )
            if total
            else []
        )
    return GalleryPage(rows=rows, total=total, page=number, page_size=size, pages=pages)


def facet_counts(db: Database, user: User, flt: GalleryFilter) -> dict[str, list[tuple[str, int]]]:
    """Per facet of ``FACETS`` (by its key): the top 50 values with their counts under every *other* active
    filter, most frequent first."""
    with db.session() as session:
        return q.gallery_facets(session, _criteria(session, user, flt), FACETS)


def distributions(db: Database, user: User, flt: GalleryFilter) -> dict[str, Any]:
    """Charts of the filtered view: "age" (10-year buckets, zero-filled, plus "unknown" when ages are missing),
    "gender", "ethnicity", "job_title" (top 15), "current_city" (top 15), each a list of (value, count)."""
    with db.session() as session:
        return q.gallery_distributions(session, _criteria(session, user, flt))


def get_persona(db: Database, user: User, result_id: int) -> dict[str, Any] | None:
    """Every field of one persona, its images and image metadata and its task's request; None if not visible."""
    if isinstance(result_id, bool) or not isinstance(result_id, int):
        return None
    with db.session() as session:
        return q.gallery_persona(session, _viewer_id(user), result_id)


def _check_id(result_id: int) -> None:
    if isinstance(result_id, bool) or not isinstance(result_id, int):
        raise NotFoundError(f"no persona {result_id!r}")


def _check_rating(rating: int | None) -> None:
    if rating is not None and (isinstance(rating, bool) or not isinstance(rating, int) or not 1 <= rating <= 5):
        raise ValidationError(f"rating must be a whole number from 1 to 5 (or none), got {rating!r}")


def _update(db: Database, user: User, result_id: int, **values: Any) -> None:
    _check_id(result_id)
    with db.transaction() as session:
        if not q.gallery_update_persona(session, _viewer_id(user), result_id, **values):
            raise NotFoundError(f"no persona {result_id}")


def set_favorite(db: Database, user: User, result_id: int, value: bool) -> None:
    _update(db, user, result_id, favorite=bool(value))


def clean_tags(tags: list[str]) -> list[str]:
    """Trimmed (inner whitespace collapsed), de-duplicated case-insensitively, order kept; raises on bad input."""
    if isinstance(tags, str) or not isinstance(tags, list | tuple):
        raise ValidationError("tags must be a list of texts")
    out: list[str] = []
    seen: set[str] = set()
    for tag in tags:
        if not isinstance(tag, str):
            raise ValidationError(f"a tag must be text, not {type(tag).__name__}")
        text = " ".join(tag.split())
        if not text:
            continue
        if len(text) > MAX_TAG_CHARS:
            raise ValidationError(f"tag {text[:20]!r}… is {len(text)} characters; the limit is {MAX_TAG_CHARS}")
        if not text.isprintable():
            raise ValidationError("tags cannot contain control characters")
        if text.casefold() not in seen:
            seen.add(text.casefold())
            out.append(text)
    if len(out) > MAX_TAGS:
        raise ValidationError(f"{len(out)} tags: at most {MAX_TAGS} per persona")
    return out


def set_tags(db: Database, user: User, result_id: int, tags: list[str]) -> None:
    _update(db, user, result_id, tags=clean_tags(tags))


def set_rating(db: Database, user: User, result_id: int, rating: int | None) -> None:
    _check_rating(rating)
    _update(db, user, result_id, rating=rating)


@dataclass(frozen=True)
class Curation:
    """One persona's curation as a form shows it: favourite, tags (as typed) and rating (1–5 or none)."""

    favorite: bool = False
    tags: tuple[str, ...] = ()
    rating: int | None = None

    @classmethod
    def of(cls, persona: Mapping[str, Any]) -> Curation:
        """The curation of a persona as ``get_persona`` returns it."""
        return cls(bool(persona.get("favorite")), tuple(persona.get("tags") or ()), persona.get("rating"))


def merge_tags(current: list[str], drawn: list[str], edited: list[str]) -> list[str]:
    """``current`` with the change from ``drawn`` to ``edited`` applied (all three clean): a tag no longer in
    ``edited`` is removed (ignoring case), a tag new in it is added at the end, every other tag stays as it is.
    A tag whose case was changed is removed and added again in its new case."""
    removed = {tag.casefold() for tag in drawn if tag not in edited}
    added = [tag for tag in edited if tag not in drawn]
    return clean_tags([tag for tag in current if tag.casefold() not in removed] + added)


def save_curation(db: Database, user: User, result_id: int, drawn: Curation, edited: Curation) -> None:
    """Save what a curation form changed: ``drawn`` is what the form showed when it was drawn, ``edited`` what it
    shows now. In one transaction on the persona as it is now, only the differences are written: a tag added in
    the form is added, one removed is removed, favourite and rating are written only when they changed. What
    others changed meanwhile (another tab, a bulk tag) is kept."""
    _check_id(result_id)
    _check_rating(edited.rating)
    drawn_tags, edited_tags = clean_tags(list(drawn.tags)), clean_tags(list(edited.tags))
    viewer = _viewer_id(user)
    with db.transaction() as session:
        current = q.gallery_curation_for_update(session, viewer, result_id)
        if current is None:
            raise NotFoundError(f"no persona {result_id}")
        values: dict[str, Any] = {}
        if bool(edited.favorite) != bool(drawn.favorite):
            values["favorite"] = bool(edited.favorite)
        if edited.rating != drawn.rating:
            values["rating"] = edited.rating
        tags = merge_tags(current["tags"], drawn_tags, edited_tags)
        if tags != current["tags"]:
            values["tags"] = tags
        if values:
            q.gallery_update_persona(session, viewer, result_id, **values)


# --- bulk curation and saved views ----------------------------------------------------------------------------

MAX_VIEW_NAME = 100


def bulk_curate(
    db: Database, user: User, flt: GalleryFilter, *, favorite: bool | None = None, curation: str | None = None,
    clear_curation: bool = False, add_tag: str | None = None,
) -> int:
    """Apply one curation to every persona of the filtered view (all pages); returns how many were changed."""
    values: dict[str, Any] = {}
    if favorite is not None:
        values["favorite"] = bool(favorite)
    if curation is not None:
        if curation not in ("keep", "reject"):
            raise ValidationError("curation must be keep or reject")
        values["curation"] = curation
    if clear_curation:
        values["curation"] = None
    tag = clean_tags([add_tag])[0] if add_tag else None
    if not values and tag is None:
        raise ValidationError("choose what to apply: favourite, keep/reject or a tag")
    with db.transaction() as session:
        criteria = _criteria(session, user, flt)
        changed = q.gallery_bulk_update(session, criteria, **values) if values else 0
        if tag is not None:
            full = q.gallery_count_full_without_tag(session, criteria, tag, max_tags=MAX_TAGS)
            if full:
                raise ValidationError(f"{full} persona(s) of the view already have {MAX_TAGS} tags, the most a "
                                      f"persona may have: remove some of theirs first, or narrow the view")
            changed = max(changed, q.gallery_add_tag(session, criteria, tag, max_tags=MAX_TAGS))
    return changed


def saved_views(db: Database, user: User) -> list[tuple[str, dict[str, str]]]:
    with db.session() as session:
        return q.list_saved_views(session, user.id)


def save_view(db: Database, user: User, name: str, flt: GalleryFilter, extra: Mapping[str, str] | None = None) -> None:
    """Store the view under ``name`` for this user (replacing a view of the same name)."""
    name = " ".join(str(name or "").split())
    if not name or len(name) > MAX_VIEW_NAME:
        raise ValidationError(f"a view needs a name of 1–{MAX_VIEW_NAME} characters")
    params = flt.to_query_params() | {k: str(v) for k, v in (extra or {}).items()}
    with db.transaction() as session:
        q.save_view(session, user.id, name, params)


def delete_view(db: Database, user: User, name: str) -> None:
    with db.transaction() as session:
        if not q.delete_saved_view(session, user.id, name):
            raise NotFoundError(f"no saved view {name!r}")
