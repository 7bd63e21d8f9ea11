"""Gallery service: the filter (shareable as URL query parameters), pages, facet counts, distributions,
one persona's details and curation (favourite, tags, rating).

Everything is filtered, counted, sorted and paged in SQL (``db.queries.gallery``); visibility is part of those
statements. A user sees only their own tasks, an administrator every task. An explicit task id the user may
not see raises ``NotFoundError``, exactly like a missing one. An empty ``task_ids`` means "every task the
user may see".
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import db.queries as q
from db.models import PersonaStatus, User
from db.session import Database
from pipeline.core.errors import NotFoundError, ValidationError

log = logging.getLogger(__name__)

__all__ = [
    "GENDERS",
    "MAX_PAGE_SIZE",
    "MAX_TAGS",
    "MAX_TAG_CHARS",
    "SORTS",
    "STATUSES",
    "GalleryFilter",
    "GalleryPage",
    "clean_tags",
    "distributions",
    "facet_counts",
    "get_persona",
    "query_page",
    "resolve_criteria",
    "set_favorite",
    "set_rating",
    "set_tags",
    "visible_task_choices",
]

GENDERS = ("m", "f", "other")
STATUSES = tuple(s.value for s in PersonaStatus)
MAX_TAGS = 20
MAX_TAG_CHARS = 40
MAX_PAGE_SIZE = 500
MAX_LIST_ITEMS = 200  # per list in a filter read from a URL
MAX_TEXT_CHARS = 200
MAX_VALUE_CHARS = 255

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

# GalleryFilter field -> query parameter name (short, readable, stable: views are shared as URLs).
_PARAM_NAMES: dict[str, str] = {
    "task_ids": "tasks",
    "genders": "gender",
    "age_min": "age_min",
    "age_max": "age_max",
    "ethnicities": "ethnicity",
    "languages": "language",
    "cities": "city",
    "states": "state",
    "text": "q",
    "favorite": "favorite",
    "tags": "tags",
    "statuses": "status",
    "min_rating": "min_rating",
    "flags": "flags",
    "unflagged": "clean",
    "curations": "curation",
}
_LIST_FIELDS = ("task_ids", "genders", "ethnicities", "languages", "cities", "states", "tags", "statuses", "flags",
                "curations")
CURATIONS = ("keep", "reject", "unset")


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


@dataclass
class GalleryFilter:
    """What the gallery shows. Within one list the values are alternatives (OR); fields combine with AND."""

    task_ids: list[str] = field(default_factory=list)  # empty: every task the user may see
    genders: list[str] = field(default_factory=list)  # 'm', 'f', 'other'
    age_min: int | None = None
    age_max: int | None = None
    ethnicities: list[str] = field(default_factory=list)
    languages: list[str] = field(default_factory=list)  # the task's bio_language
    cities: list[str] = field(default_factory=list)  # current_city
    states: list[str] = field(default_factory=list)  # current_state
    text: str = ""  # every word must occur in a name, job, workplace, education, bio or about text
    favorite: bool | None = None
    tags: list[str] = field(default_factory=list)  # any of them
    statuses: list[str] = field(default_factory=list)  # persona status: pending, completed, failed
    min_rating: int | None = None
    flags: list[str] = field(default_factory=list)  # quality flags: any of them
    unflagged: bool = False  # only personas no quality check flagged
    curations: list[str] = field(default_factory=list)  # keep / reject / unset

    def to_query_params(self) -> dict[str, str]:
        """Compact query parameters: lists comma-joined (a comma inside a value is ``%2C``), empty ones omitted."""
        params: dict[str, str] = {}
        for name, key in _PARAM_NAMES.items():
            value = getattr(self, name)
            if name in _LIST_FIELDS:
                items = _clean_list(value)
                if items:
                    params[key] = ",".join(_encode_item(v) for v in items)
            elif name == "text":
                text = " ".join(str(value or "").split())
                if text:
                    params[key] = text
            elif name == "favorite":
                if value is not None:
                    params[key] = "1" if value else "0"
            elif name == "unflagged":
                if value:
                    params[key] = "1"
            elif value is not None:
                params[key] = str(int(value))
        return params

    @classmethod
    def from_query_params(cls, params: Mapping[str, str | list[str]]) -> GalleryFilter:
        """The filter of a URL. Tolerant: unknown keys and bad values are ignored; never raises."""
        flt = cls()
        try:
            raw = dict(params.items())
        except Exception:  # a foreign mapping that misbehaves: an empty filter is the safe answer
            return flt
        for name, key in _PARAM_NAMES.items():
            value = raw.get(key)
            if value is None:
                continue
            parts = [v for v in value if isinstance(v, str)] if isinstance(value, list | tuple) else [value]
            parts = [p for p in parts if isinstance(p, str)]
            if not parts:
                continue
            if name in _LIST_FIELDS:
                items = _clean_list([_decode_item(item) for part in parts for item in part.split(",")])
                if name == "genders":
                    items = [g for g in (i.lower() for i in items) if g in GENDERS]
                elif name == "statuses":
                    items = [s for s in (i.lower() for i in items) if s in STATUSES]
                elif name == "curations":
                    items = [s for s in (i.lower() for i in items) if s in CURATIONS]
                elif name == "task_ids":
                    items = [t for t in items if t.isprintable() and len(t) <= 64]
                setattr(flt, name, items)
            elif name == "text":
                flt.text = " ".join(parts[-1].split())[:MAX_TEXT_CHARS]
            elif name == "favorite":
                flt.favorite = _parse_bool(parts[-1])
            elif name == "unflagged":
                flt.unflagged = _parse_bool(parts[-1]) is True
            elif name in ("age_min", "age_max"):
                setattr(flt, name, _parse_int(parts[-1], 0, 150))
            elif name == "min_rating":
                flt.min_rating = _parse_int(parts[-1], 1, 5)
        return flt


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
    genders = [g.lower() for g in _clean_list(flt.genders)]
    return q.PersonaCriteria(
        viewer_id=viewer,
        task_ids=tuple(task_ids),
        genders=tuple(g for g in genders if g in GENDERS),
        age_min=flt.age_min if isinstance(flt.age_min, int) else None,
        age_max=flt.age_max if isinstance(flt.age_max, int) else None,
        ethnicities=tuple(_clean_list(flt.ethnicities)),
        languages=tuple(_clean_list(flt.languages)),
        cities=tuple(_clean_list(flt.cities)),
        states=tuple(_clean_list(flt.states)),
        text=" ".join(str(flt.text or "").split())[:MAX_TEXT_CHARS],
        favorite=flt.favorite if isinstance(flt.favorite, bool) else None,
        tags=tuple(_clean_list(flt.tags)),
        statuses=tuple(_clean_list(flt.statuses)),
        min_rating=flt.min_rating if isinstance(flt.min_rating, int) else None,
        flags=tuple(_clean_list(flt.flags)),
        unflagged=flt.unflagged is True,
        curations=tuple(c for c in _clean_list(flt.curations) if c in CURATIONS),
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
    """Per facet (gender, ethnicity, language, city, state, status, tags): the top 50 values with their counts
    under every *other* active filter, most frequent first."""
    with db.session() as session:
        return q.gallery_facets(session, _criteria(session, user, flt))


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


def _update(db: Database, user: User, result_id: int, **values: Any) -> None:
    if isinstance(result_id, bool) or not isinstance(result_id, int):
        raise NotFoundError(f"no persona {result_id!r}")
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
    if rating is not None and (isinstance(rating, bool) or not isinstance(rating, int) or not 1 <= rating <= 5):
        raise ValidationError(f"rating must be a whole number from 1 to 5 (or none), got {rating!r}")
    _update(db, user, result_id, rating=rating)


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
            tagged = 0
            for result_id, tags in q.gallery_ids_and_tags(session, criteria):
                if tag.casefold() not in {t.casefold() for t in tags}:
                    q.set_persona_tags(session, result_id, clean_tags([*tags, tag]))
                    tagged += 1
            changed = max(changed, tagged)
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
