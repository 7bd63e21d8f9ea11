"""The gallery service on SQLite and PostgreSQL: filters, text search, facet counts and distributions checked
against a plain-Python computation over the same rows, stable sort and paging, visibility, the query-parameter
round trip and the curation setters."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

import pytest
import sqlalchemy as sa

import db.queries as q
from db.models import GenerationResult, User
from db.session import Database
from pipeline.core.errors import NotFoundError, ValidationError
from pipeline.outputs.browse import (
    FACETS,
    SORTS,
    GalleryFilter,
    distributions,
    facet_counts,
    get_persona,
    query_page,
    set_favorite,
    set_rating,
    set_tags,
    visible_task_choices,
)
from tests.factories import make_user

FIRST = ["Ana", "João", "Maria", "Pedro", "Ávila", "Zoë", "Li", "Omar"]
LAST = ["Silva", "Santos", "Ávila", "Costa", "O'Neil", "Ferreira"]
GENDERS = ["m", "f", "nb"]
ETHNICITIES = ["White", "Black", "Asian", "Mixed", None]
PLACES = [("Lisbon", "Lisboa"), ("Porto", "Porto"), ("São Paulo", "SP"), ("Washington, D.C.", "DC"), (None, None)]
JOBS = ["Nurse", "Software engineer", "ENFERMEIRA ÁGIL", "Teacher 100% remote", "Chef_de_cuisine", None]
TEXT_FIELDS = q.GALLERY_TEXT_FIELDS
LONG_DESCRIPTION = "Retired fishermen of the Algarve coast " * 10


def persona(i: int) -> dict[str, Any]:
    city, state = PLACES[i % 5]
    return {
        "firstname": FIRST[i % 8],
        "lastname": LAST[(i // 3) % 6],
        "gender": GENDERS[i % 3],
        "ethnicity": ETHNICITIES[i % 5],
        "age": None if i % 9 == 0 else 13 + (i * 13) % 88,
        "bio_facebook": f"facebook bio {i}",
        "bio_instagram": "loves cycling" if i % 4 == 0 else "quiet reader",
        "bio_x": f"x {i}",
        "bio_tiktok": None,
        "job_title": JOBS[i % 6],
        "workplace": "Hospital de Santa Maria" if i % 6 == 0 else "Acme",
        "edu_establishment": "Universidade de Lisboa",
        "edu_study": "Nursing" if i % 2 else "Arts",
        "current_city": city,
        "current_state": state,
        "prev_city": "Faro",
        "prev_state": "Algarve",
        "about": f"person number {i}",
    }


def curation(i: int) -> dict[str, Any]:
    tags: list[str] = []
    if i % 3 == 0:
        tags.append("keep")
    if i % 5 == 0:
        tags.append("portrait")
    if i % 7 == 0:
        tags.append("odd, tag")
    status = "failed" if i % 10 == 5 else ("pending" if i % 5 == 0 else "completed")
    return {
        "status": status,
        "favorite": i % 4 == 1,
        "tags": tags or (None if i % 2 else []),  # untouched rows hold NULL, curated ones a list
        "rating": (i % 6) or None,
        "images": [f"k/{i}/img00.jpg"],
        "image_count": 1,
        "image_meta": {"images": [{"key": f"k/{i}/img00.jpg", "thumb_key": f"k/{i}/img00_thumb.jpg"}]}
        if i % 2
        else None,
        "base_image_url": f"k/{i}/base.png",
    }


class World:
    """Three users, three tasks and 50 personas with known values; ``expected`` is the Python reference."""

    def __init__(self, database: Database):
        self.db = database
        self.alice = make_user(database, "alice@example.org", admin=False)
        self.bob = make_user(database, "bob@example.org", admin=False)
        self.root = make_user(database, "root@example.org", admin=True)
        self.reference: list[dict[str, Any]] = []
        layout = [("aaaa00000001", self.alice, "Portuguese", 25), ("aaaa00000002", self.alice, "English", 15),
                  ("bbbb00000001", self.bob, "Spanish", 10)]
        i = 0
        with database.transaction() as session:
            for task_id, owner, language, count in layout:
                task = q.insert_task(
                    session, task_id=task_id, user_id=owner.id, persona_description=LONG_DESCRIPTION,
                    bio_language=language, number_to_generate=count, images_per_persona=4,
                )
                for batch in range(1, (count + 9) // 10 + 1):
                    size = min(10, count - (batch - 1) * 10)
                    rows = [persona(i + k) for k in range(size)]
                    q.insert_personas(session, task.id, batch, rows)
                    for k, row in enumerate(rows):
                        self.reference.append(
                            {**row, "i": i + k, "task_id": task_id, "language": language, "owner": owner.id,
                             "batch_number": batch, "slot": k}
                        )
                    i += size
            session.flush()
            ids = session.execute(
                sa.select(GenerationResult.id).order_by(GenerationResult.task_id, GenerationResult.batch_number,
                                                        GenerationResult.slot)
            ).scalars().all()
            for row, pk in zip(self.reference, ids, strict=True):
                values = curation(row["i"])
                session.execute(sa.update(GenerationResult).where(GenerationResult.id == pk).values(**values))
                row.update(values, id=pk, tags=values["tags"] or [])

    def visible(self, user: User) -> list[dict[str, Any]]:
        return [r for r in self.reference if user.is_admin or r["owner"] == user.id]

    def expected(self, user: User, flt: GalleryFilter, skip: str | None = None) -> list[dict[str, Any]]:
        return [r for r in self.visible(user) if matches(r, flt, skip)]


def bucket(gender: str) -> str:
    return gender if gender in ("m", "f") else "other"


def matches(r: dict[str, Any], f: GalleryFilter, skip: str | None = None) -> bool:
    checks = [
        not f.task_ids or r["task_id"] in f.task_ids,
        skip == "gender" or not f.genders or bucket(r["gender"]) in f.genders,
        f.age_min is None or (r["age"] is not None and r["age"] >= f.age_min),
        f.age_max is None or (r["age"] is not None and r["age"] <= f.age_max),
        skip == "ethnicity" or not f.ethnicities or r["ethnicity"] in f.ethnicities,
        skip == "language" or not f.languages or r["language"] in f.languages,
        skip == "city" or not f.cities or r["current_city"] in f.cities,
        skip == "state" or not f.states or r["current_state"] in f.states,
        all(any(t in (r[c] or "").lower() for c in TEXT_FIELDS) for t in f.text.lower().split()),
        f.favorite is None or r["favorite"] == f.favorite,
        skip == "tags" or not f.tags or bool(set(r["tags"]) & set(f.tags)),
        skip == "status" or not f.statuses or r["status"] in f.statuses,
        f.min_rating is None or (r["rating"] is not None and r["rating"] >= f.min_rating),
    ]
    return all(checks)


FACET_VALUE = {
    "gender": lambda r: [bucket(r["gender"])],
    "ethnicity": lambda r: [r["ethnicity"]],
    "language": lambda r: [r["language"]],
    "city": lambda r: [r["current_city"]],
    "state": lambda r: [r["current_state"]],
    "status": lambda r: [r["status"]],
    "tags": lambda r: r["tags"],
    "flags": lambda r: r.get("quality_flags") or [],
}


def python_counts(rows: Iterable[dict[str, Any]], value: Any) -> dict[str, int]:
    return dict(Counter(v for r in rows for v in value(r) if v))


@pytest.fixture
def world(database: Database) -> World:
    return World(database)


FILTERS = [
    GalleryFilter(),
    GalleryFilter(task_ids=["aaaa00000001"]),
    GalleryFilter(task_ids=["aaaa00000001", "aaaa00000002"], genders=["f", "other"], age_min=20, age_max=60),
    GalleryFilter(ethnicities=["White", "Asian"], languages=["English"]),
    GalleryFilter(cities=["Washington, D.C.", "São Paulo"], statuses=["completed"]),
    GalleryFilter(text="nurse"),
    GalleryFilter(favorite=True, tags=["keep"], min_rating=2),
    GalleryFilter(favorite=False, states=["Lisboa"], genders=["m"]),
    GalleryFilter(tags=["portrait", "odd, tag"], statuses=["pending", "failed"]),
    GalleryFilter(languages=["Spanish"]),  # not alice's: an empty view, not an error
]


def test_filters_facets_and_distributions_match_python(world: World) -> None:
    for user in (world.alice, world.root):
        for flt in FILTERS:
            expected = world.expected(user, flt)
            page = query_page(world.db, user, flt, page_size=500)
            assert page.total == len(expected), flt
            assert sorted(r["id"] for r in page.rows) == sorted(r["id"] for r in expected), flt
            facets = facet_counts(world.db, user, flt)
            assert set(facets) == set(FACET_VALUE)
            for key, value in FACET_VALUE.items():
                want = python_counts(world.expected(user, flt, skip=key), value)
                assert dict(facets[key]) == want, (key, flt)
                counts = [n for _, n in facets[key]]
                assert counts == sorted(counts, reverse=True)
            assert GalleryFilter.from_query_params(flt.to_query_params()) == flt
    check_distributions(world)


def test_facets_keep_the_top_values_by_count_then_by_value(world: World) -> None:
    with world.db.session() as session:
        facets = q.gallery_facets(session, q.PersonaCriteria(), FACETS, limit=2)
    for key in ("ethnicity", "status", "tags"):  # ties (10 of each ethnicity) go by the value, A to Z
        ranked = sorted(python_counts(world.reference, FACET_VALUE[key]).items(), key=lambda kv: (-kv[1], kv[0]))
        assert facets[key] == ranked[:2], key


def check_distributions(world: World) -> None:
    flt = GalleryFilter(task_ids=["aaaa00000001", "aaaa00000002"], genders=["f", "m"])
    rows = world.expected(world.alice, flt)
    dist = distributions(world.db, world.alice, flt)
    ages = [r["age"] for r in rows]
    want: Counter[str] = Counter()
    for age in ages:
        want["unknown" if age is None else "13-19" if age < 20 else f"{age // 10 * 10}-{age // 10 * 10 + 9}"] += 1
    assert dict(dist["age"]) == {label: want.get(label, 0) for label, _ in dist["age"]}
    assert sum(n for _, n in dist["age"]) == len(rows)
    labels = [label for label, _ in dist["age"]]
    assert labels[0] == "13-19" and labels[-1] == "unknown"
    assert dict(dist["gender"]) == python_counts(rows, FACET_VALUE["gender"])
    assert dict(dist["ethnicity"]) == python_counts(rows, FACET_VALUE["ethnicity"])
    assert dict(dist["job_title"]) == python_counts(rows, lambda r: [r["job_title"]])
    assert dict(dist["current_city"]) == python_counts(rows, lambda r: [r["current_city"]])
    empty = distributions(world.db, world.alice, GalleryFilter(text="no such words"))
    assert empty["age"] == [] and empty["gender"] == []


def test_text_search(world: World) -> None:
    def ids(text: str) -> set[int]:
        return {r["id"] for r in query_page(world.db, world.root, GalleryFilter(text=text), page_size=500).rows}

    def want(predicate: Any) -> set[int]:
        return {r["id"] for r in world.reference if predicate(r)}

    assert ids("NURSE") == want(lambda r: any("nurse" in (r[c] or "").lower() for c in TEXT_FIELDS))
    assert ids("enfermeira ágil") == want(lambda r: r["job_title"] == "ENFERMEIRA ÁGIL")  # non-ASCII folds too
    assert ids("ávila") == want(lambda r: "Ávila" in (r["firstname"], r["lastname"]))
    assert ids("100%") == want(lambda r: r["job_title"] == "Teacher 100% remote")  # % is literal
    assert ids("chef_de") == want(lambda r: r["job_title"] == "Chef_de_cuisine")  # _ is literal
    assert ids("%") == ids("100%")
    assert ids("santa cycling") == want(lambda r: r["workplace"].startswith("Hospital") and r["i"] % 4 == 0)
    assert ids("o'neil") == want(lambda r: r["lastname"] == "O'Neil")
    # every word must occur somewhere (not as one phrase): "7" also matches "x 17"
    assert ids("person number 7") == want(
        lambda r: "person number" in r["about"] and any("7" in (r[c] or "") for c in TEXT_FIELDS)
    )
    assert ids("zzz") == set()


def test_a_term_never_spans_two_fields(world: World) -> None:
    def total(text: str) -> int:
        return query_page(world.db, world.root, GalleryFilter(text=text)).total

    def found(term: str, r: dict[str, Any]) -> bool:
        return any(term in (r[c] or "").lower() for c in TEXT_FIELDS)

    # persona 0 is "Ana Silva": each word matches its own field, the two together match no single field
    assert total("ana silva") == sum(1 for r in world.reference if found("ana", r) and found("silva", r)) > 0
    assert total("anasilva") == 0 and total("ana\nsilva") == total("ana silva")


def test_age_and_rating_sorts_under_a_filter_that_excludes_nulls(world: World) -> None:
    """With an age range (a minimum rating) no NULL can occur, so the NULLs-last sort key is left out; the order
    is the same: by the value, then by id, in the chosen direction."""
    for flt, sort, key in ((GalleryFilter(age_min=20, age_max=60), "age", "age"),
                           (GalleryFilter(min_rating=2), "rating", "rating")):
        for descending in (False, True):
            rows = query_page(world.db, world.root, flt, sort=sort, descending=descending, page_size=500).rows
            want = sorted(world.expected(world.root, flt), key=lambda r: (r[key], r["id"]), reverse=descending)
            assert [r["id"] for r in rows] == [r["id"] for r in want], (sort, descending)


def test_the_count_reads_the_personas_alone_and_the_facets_filter_once(world: World) -> None:
    """Performance: the count reads generation_results alone (task-level conditions are a ``task_id IN
    (SELECT …)``), also for a member's view filtered by task and language; the facet counts are one statement
    that applies the filters once (the text search as often as the count does) and joins the tasks once."""
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(" ".join(statement.split()).upper())

    flt = GalleryFilter(task_ids=["aaaa00000001", "aaaa00000002"], languages=["English"], text="nurse")
    sa.event.listen(world.db.engine, "before_cursor_execute", record)
    try:
        page = query_page(world.db, world.alice, flt, page_size=500)
        facets = facet_counts(world.db, world.alice, flt)
    finally:
        sa.event.remove(world.db.engine, "before_cursor_execute", record)
    assert page.total == len(world.expected(world.alice, flt)) > 0
    assert dict(facets["language"]) == python_counts(world.expected(world.alice, flt, skip="language"),
                                                     FACET_VALUE["language"])
    counts = [s for s in statements if s.startswith("SELECT COUNT(*)")]
    assert counts and not any(" JOIN " in s for s in counts), counts
    grouped = [s for s in statements if "GROUP BY" in s]
    assert len(grouped) == 1 and grouped[0].count(" JOIN GENERATION_TASKS") == 1, grouped
    assert "BIO_LANGUAGE" in grouped[0] and grouped[0].count(" LIKE ") == counts[0].count(" LIKE ") > 0, grouped


def test_sort_and_paging_are_stable(world: World) -> None:
    for descending in (False, True):
        check_sort_and_paging(world, descending)


def check_sort_and_paging(world: World, descending: bool) -> None:
    user = world.alice
    flt = GalleryFilter(task_ids=["aaaa00000001", "aaaa00000002"])
    rows = world.expected(user, flt)
    task_order = {"aaaa00000001": 0, "aaaa00000002": 1}
    sign = -1 if descending else 1

    def key(sort: str) -> Any:
        def k(r: dict[str, Any]) -> tuple[Any, ...]:
            if sort == "batch":
                return tuple(sign * x for x in (task_order[r["task_id"]], r["batch_number"], r["slot"], r["id"]))
            if sort == "name":
                return (r["lastname"].lower(), r["firstname"].lower(), r["id"])
            if sort in ("age", "rating"):
                value = r[sort]
                return (value is None, sign * (value or 0), sign * r["id"])
            return (sign * r["id"],)  # newest / updated: equal timestamps per batch -> ties by id

        return k

    for label in SORTS:
        whole = query_page(world.db, user, flt, sort=label, descending=descending, page_size=500)
        assert whole.total == len(rows) == 40 and whole.pages == 1
        paged: list[int] = []
        for number in range(1, 7):
            page = query_page(world.db, user, flt, sort=label, descending=descending, page=number, page_size=7)
            assert (page.total, page.pages, page.page, page.page_size) == (40, 6, number, 7)
            assert len(page.rows) == (7 if number < 6 else 5)
            paged += [r["id"] for r in page.rows]
        assert paged == [r["id"] for r in whole.rows], label
        if label in ("batch", "age", "rating"):
            assert paged == [r["id"] for r in sorted(rows, key=key(label))], label
        if label == "name":
            expected = sorted(rows, key=key(label), reverse=descending)
            assert paged == [r["id"] for r in expected]
    last = query_page(world.db, user, flt, page=999, page_size=7)
    assert last.page == 6 and len(last.rows) == 5
    first = query_page(world.db, user, flt, page=0, page_size=0)
    assert first.page == 1 and first.page_size == 1 and first.pages == 40
    fallback = query_page(world.db, user, flt, sort="DROP TABLE users", page_size=500)
    assert [r["id"] for r in fallback.rows] == [r["id"] for r in query_page(world.db, user, flt, page_size=500).rows]
    empty = query_page(world.db, user, GalleryFilter(text="nothing matches this"))
    assert (empty.rows, empty.total, empty.page, empty.pages) == ([], 0, 1, 1)


def check_rows_carry_what_the_pages_show(world: World) -> None:
    page = query_page(world.db, world.alice, GalleryFilter(task_ids=["aaaa00000001"]), page_size=3)
    row = page.rows[1]
    ref = next(r for r in world.reference if r["id"] == row["id"])
    for name in (*q.GALLERY_PERSONA_FIELDS, "task_id", "batch_number", "slot", "status", "favorite", "rating",
                 "image_count", "base_image_url", "language"):
        assert row[name] == ref[name], name
    assert row["tags"] == ref["tags"]
    assert row["thumb_uri"] == f"k/{ref['i']}/img00_thumb.jpg"  # i odd: the first variation's thumbnail
    row0 = page.rows[0]
    assert row0["thumb_uri"] == row0["base_image_url"]  # no image_meta: the base image
    assert {"id", "error", "created_at", "updated_at"} <= set(row)


def test_visibility(world: World) -> None:
    db, alice, bob, root = world.db, world.alice, world.bob, world.root
    assert [t["task_id"] for t in visible_task_choices(db, bob)] == ["bbbb00000001"]
    choices = {t["task_id"]: t for t in visible_task_choices(db, alice)}
    assert set(choices) == {"aaaa00000001", "aaaa00000002"}
    assert (choices["aaaa00000001"]["count"], choices["aaaa00000002"]["personas"]) == (25, 15)
    assert len(choices["aaaa00000001"]["description"]) <= 80 and choices["aaaa00000001"]["description"].endswith("…")
    assert {t["task_id"] for t in visible_task_choices(db, root)} == {"aaaa00000001", "aaaa00000002", "bbbb00000001"}

    alices = GalleryFilter(task_ids=["aaaa00000001"])
    for call in (
        lambda: query_page(db, bob, alices),
        lambda: facet_counts(db, bob, alices),
        lambda: distributions(db, bob, alices),
        lambda: query_page(db, bob, GalleryFilter(task_ids=["bbbb00000001", "aaaa00000002"])),
        lambda: query_page(db, alice, GalleryFilter(task_ids=["nosuchtask00"])),
    ):
        with pytest.raises(NotFoundError):
            call()
    assert {r["task_id"] for r in query_page(db, bob, GalleryFilter(), page_size=500).rows} == {"bbbb00000001"}
    assert query_page(db, bob, GalleryFilter(), page_size=500).total == 10
    assert query_page(db, root, GalleryFilter(), page_size=500).total == 50
    assert query_page(db, root, alices).total == 25
    assert facet_counts(db, bob, GalleryFilter())["language"] == [("Spanish", 10)]

    alice_row = next(r for r in world.reference if r["owner"] == alice.id)
    assert get_persona(db, bob, alice_row["id"]) is None
    assert get_persona(db, alice, 10**9) is None
    assert get_persona(db, root, alice_row["id"]) is not None
    for setter in (
        lambda: set_favorite(db, bob, alice_row["id"], True),
        lambda: set_tags(db, bob, alice_row["id"], ["x"]),
        lambda: set_rating(db, bob, alice_row["id"], 3),
        lambda: set_rating(db, alice, 10**9, 3),
    ):
        with pytest.raises(NotFoundError):
            setter()
    detail = get_persona(db, alice, alice_row["id"])
    assert detail is not None and detail["favorite"] == alice_row["favorite"]  # bob changed nothing
    set_favorite(db, root, alice_row["id"], True)  # an administrator may curate anything
    assert get_persona(db, alice, alice_row["id"])["favorite"] is True  # type: ignore[index]


def test_rows_persona_detail_and_curation(world: World) -> None:
    check_rows_carry_what_the_pages_show(world)
    db, alice = world.db, world.alice
    ref = next(r for r in world.reference if r["task_id"] == "aaaa00000002" and r["i"] % 2)
    detail = get_persona(db, alice, ref["id"])
    assert detail is not None
    for name in q.GALLERY_PERSONA_FIELDS:
        assert detail[name] == ref[name]
    assert detail["images"] == [f"k/{ref['i']}/img00.jpg"]
    assert detail["image_meta"]["images"][0]["thumb_key"] == f"k/{ref['i']}/img00_thumb.jpg"
    assert detail["task"]["task_id"] == "aaaa00000002" and detail["task"]["language"] == "English"
    assert "config_snapshot" not in detail["task"]

    pid = ref["id"]
    set_favorite(db, alice, pid, True)
    set_tags(db, alice, pid, ["  Keep ", "keep", "portrait  shot", "", "KEEP"])
    set_rating(db, alice, pid, 5)
    detail = get_persona(db, alice, pid)
    assert detail is not None
    assert (detail["favorite"], detail["tags"], detail["rating"]) == (True, ["Keep", "portrait shot"], 5)
    hits = query_page(db, alice, GalleryFilter(tags=["portrait shot"], favorite=True, min_rating=5)).rows
    assert [r["id"] for r in hits] == [pid]
    assert ("portrait shot", 1) in facet_counts(db, alice, GalleryFilter())["tags"]

    set_rating(db, alice, pid, None)
    set_tags(db, alice, pid, [])
    set_favorite(db, alice, pid, False)
    detail = get_persona(db, alice, pid)
    assert detail is not None and (detail["favorite"], detail["tags"], detail["rating"]) == (False, [], None)

    set_tags(db, alice, pid, [f"t{n}" for n in range(20)] + ["t0"])  # 20 after de-duplication: fine
    for bad_tags in (
        [f"t{n}" for n in range(21)],
        ["x" * 41],
        "keep",
        [3],
        ["bad\x00tag"],
    ):
        with pytest.raises(ValidationError):
            set_tags(db, alice, pid, bad_tags)  # type: ignore[arg-type]
    for bad_rating in (0, 6, -1, True, "3", 2.5):
        with pytest.raises(ValidationError):
            set_rating(db, alice, pid, bad_rating)  # type: ignore[arg-type]
    detail = get_persona(db, alice, pid)
    assert detail is not None and len(detail["tags"]) == 20 and detail["rating"] is None


def test_query_params_round_trip_and_tolerance() -> None:
    full = GalleryFilter(
        task_ids=["abc123def456", "0123456789ab"],
        genders=["f", "other"],
        age_min=18,
        age_max=65,
        ethnicities=["White", "Black, African"],
        languages=["Portuguese (Portugal)", "English"],
        cities=["Washington, D.C.", "São Paulo", "100% town"],
        states=["DC"],
        text="nurse  Lisbon",
        favorite=False,
        tags=["keep", "odd, tag", "a%2Cb"],
        statuses=["completed", "failed"],
        min_rating=3,
    )
    params = full.to_query_params()
    assert all(isinstance(v, str) and v for v in params.values())
    assert params["gender"] == "f,other" and params["favorite"] == "0" and params["q"] == "nurse Lisbon"
    back = GalleryFilter.from_query_params(params)
    assert asdict(back) == {**asdict(full), "text": "nurse Lisbon"}
    assert GalleryFilter().to_query_params() == {}
    assert GalleryFilter.from_query_params({}) == GalleryFilter()
    # st.query_params.get_all gives lists; repeated keys add up, the last scalar wins.
    assert GalleryFilter.from_query_params({"tasks": ["a1,b2", "c3"], "age_min": ["10", "20"]}) == GalleryFilter(
        task_ids=["a1", "b2", "c3"], age_min=20
    )
    junk = {
        "gender": "m,x,F",
        "age_min": "abc",
        "age_max": "-5",
        "min_rating": "9",
        "favorite": "maybe",
        "status": "completed,exploded",
        "q": "  " + "y" * 500,
        "tasks": ",,",
        "unknown": "1",
        "tags": ["ok", 7],  # type: ignore[list-item]
    }
    parsed = GalleryFilter.from_query_params(junk)  # type: ignore[arg-type]
    assert parsed == GalleryFilter(genders=["m", "f"], statuses=["completed"], text="y" * 200, tags=["ok"])
    assert GalleryFilter.from_query_params({"favorite": "yes", "min_rating": " 2 "}) == GalleryFilter(
        favorite=True, min_rating=2
    )


def test_quality_flag_filters_and_exports_exclude_flagged(database: Database, db_url: str, tmp_path: Any) -> None:
    from pipeline.outputs.exports import export_view
    from tests.factories import local_storage, make_settings, results_of, run_worker, submit

    settings = make_settings(db_url, tmp_path)
    user = make_user(database)
    task_id = submit(database, settings, user, count=4, images=4)
    run_worker(database, local_storage(tmp_path), settings)
    rows = results_of(database, task_id)
    with database.transaction() as session:  # flag two personas as the review stage would
        for row, flags in zip(rows[:2], (["bio_x_too_long"], ["near_duplicate_bio", "bio_x_too_long"]), strict=True):
            session.execute(sa.update(GenerationResult).where(GenerationResult.id == row.id).values(quality_flags=flags))
        for row in rows[2:]:
            session.execute(sa.update(GenerationResult).where(GenerationResult.id == row.id).values(quality_flags=None))
    flagged = GalleryFilter(task_ids=[task_id], flags=["near_duplicate_bio"])
    assert query_page(database, user, flagged).total == 1
    assert dict(facet_counts(database, user, GalleryFilter(task_ids=[task_id]))["flags"]) == {
        "bio_x_too_long": 2, "near_duplicate_bio": 1}
    clean = GalleryFilter(task_ids=[task_id], unflagged=True)
    assert query_page(database, user, clean).total == 2
    assert GalleryFilter.from_query_params(clean.to_query_params()) == clean
    out = export_view(database, local_storage(tmp_path), user, clean, "jsonl", tmp_path / "clean.jsonl")
    assert len(out.read_text().splitlines()) == 2


def test_bulk_curation_saved_views_and_curation_filter(database: Database, db_url: str, tmp_path: Any) -> None:
    from pipeline.outputs.browse import bulk_curate, delete_view, save_view, saved_views
    from pipeline.outputs.exports import export_view
    from tests.factories import local_storage, make_settings, run_worker, submit

    settings = make_settings(db_url, tmp_path)
    user = make_user(database)
    other = make_user(database, "other@example.org", admin=False)
    task_id = submit(database, settings, user, count=6, images=4)
    run_worker(database, local_storage(tmp_path), settings)
    everything = GalleryFilter(task_ids=[task_id])
    women = GalleryFilter(task_ids=[task_id], genders=["f"])
    n_women = query_page(database, user, women).total
    assert bulk_curate(database, user, women, curation="keep") == n_women
    assert bulk_curate(database, user, everything, add_tag="pilot") == 6
    assert bulk_curate(database, user, everything, add_tag="Pilot") == 0  # already there (case-insensitive)
    kept = GalleryFilter(task_ids=[task_id], curations=["keep"])
    assert query_page(database, user, kept).total == n_women
    unset = GalleryFilter(task_ids=[task_id], curations=["unset"])
    assert query_page(database, user, unset).total == 6 - n_women
    assert dict(facet_counts(database, user, everything)["tags"]) == {"pilot": 6}
    out = export_view(database, local_storage(tmp_path), user, kept, "jsonl", tmp_path / "kept.jsonl")
    assert len(out.read_text().splitlines()) == n_women  # exports honour the curation
    with pytest.raises(ValidationError):
        bulk_curate(database, user, everything)
    with pytest.raises(NotFoundError):
        bulk_curate(database, other, everything, favorite=True)  # not their task
    assert GalleryFilter.from_query_params(kept.to_query_params()) == kept

    save_view(database, user, "kept women", kept, {"sort": "age"})
    save_view(database, user, "kept women", women)  # same name: replaced
    assert saved_views(database, user) == [("kept women", women.to_query_params())]
    assert saved_views(database, other) == []
    with pytest.raises(ValidationError):
        save_view(database, user, "  ", women)
    delete_view(database, user, "kept women")
    with pytest.raises(NotFoundError):
        delete_view(database, user, "kept women")
