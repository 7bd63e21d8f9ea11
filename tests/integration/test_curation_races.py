"""Curation saves keep what others changed meanwhile (SQLite and PostgreSQL).

Two people (or two tabs) draw the same persona's curation form; each saves only what they changed in it, so
both changes survive, in either order. A bulk tag over a view and a single edit racing it lose nothing. The
races are made deterministic by running the other writer from inside the first one's transaction (right after
a chosen statement) and waiting until that writer has finished or is blocked on a lock.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import pytest
import sqlalchemy as sa

import db.queries as q
from db.models import User
from db.session import Database
from pipeline.core.errors import NotFoundError, ValidationError
from pipeline.outputs.browse import (
    MAX_TAGS,
    Curation,
    GalleryFilter,
    bulk_curate,
    get_persona,
    merge_tags,
    save_curation,
    set_tags,
)
from tests.factories import make_user

BLOCKED_OR_DONE_SECONDS = 5.0  # how long the first writer waits at most for the other one to finish or block
# The code of Database.transaction (a generator under contextlib.contextmanager): a thread running it is on its stack.
TRANSACTION_CODE = Database.transaction.__wrapped__.__code__  # type: ignore[attr-defined]


def add_personas(database: Database, user: User, count: int, task_id: str = "curation0001") -> list[int]:
    """A task of ``count`` personas owned by ``user``; their ids in slot order."""
    with database.transaction() as session:
        task = q.insert_task(
            session, task_id=task_id, user_id=user.id, persona_description="curation races",
            bio_language="English", number_to_generate=count, images_per_persona=1,
        )
        people = [{"firstname": f"P{i}", "lastname": "Race", "gender": "f", "age": 30 + i} for i in range(count)]
        q.insert_personas(session, task.id, 1, people)
        session.flush()
        return [row.id for row in q.list_results(session, task.id)]


def drawn(database: Database, user: User, result_id: int) -> Curation:
    """What a curation form shows when it is drawn now."""
    persona = get_persona(database, user, result_id)
    assert persona is not None
    return Curation.of(persona)


def stored(database: Database, user: User, result_id: int) -> tuple[bool, list[str], int | None]:
    persona = get_persona(database, user, result_id)
    assert persona is not None
    return persona["favorite"], persona["tags"], persona["rating"]


@pytest.fixture
def ana(database: Database) -> User:
    return make_user(database, "ana@example.org", admin=False)


def test_two_forms_drawn_together_keep_both_changes(database: Database, ana: User) -> None:
    first, second, third = add_personas(database, ana, 3)
    set_tags(database, ana, first, ["old"])

    # One adds a tag, the other rates: both survive, in either order.
    for pid, order in ((first, "tag first"), (second, "rating first")):
        form = drawn(database, ana, pid)
        tagging = (form, replace(form, tags=(*form.tags, "A")))
        rating = (form, replace(form, rating=4))
        for before, after in ((tagging, rating) if order == "tag first" else (rating, tagging)):
            save_curation(database, ana, pid, before, after)
        favourite, tags, stars = stored(database, ana, pid)
        assert (favourite, stars) == (False, 4), order
        assert tags == (["old", "A"] if pid == first else ["A"]), order

    # One adds B and removes "old", the other adds C and favourites: nothing of either is lost.
    form = drawn(database, ana, first)
    save_curation(database, ana, first, form, replace(form, tags=("A", "B")))
    save_curation(database, ana, first, form, replace(form, tags=(*form.tags, "C"), favorite=True))
    assert stored(database, ana, first) == (True, ["A", "B", "C"], 4)

    # A form that changes nothing writes nothing: not even a concurrent unfavourite is undone.
    form = drawn(database, ana, first)
    save_curation(database, ana, first, form, replace(form, favorite=False))
    save_curation(database, ana, first, form, form)
    assert stored(database, ana, first) == (False, ["A", "B", "C"], 4)

    # A case change is a removal and an addition; a tag someone else added in another case is not doubled.
    form = drawn(database, ana, third)
    save_curation(database, ana, third, form, replace(form, tags=("Pilot",)))
    save_curation(database, ana, third, form, replace(form, tags=("pilot", "x")))
    assert stored(database, ana, third)[1] == ["Pilot", "x"]
    form = drawn(database, ana, third)
    save_curation(database, ana, third, form, replace(form, tags=("PILOT", "x")))
    assert stored(database, ana, third)[1] == ["x", "PILOT"]


def test_a_save_checks_visibility_and_values_and_writes_nothing_on_error(database: Database, ana: User) -> None:
    [pid] = add_personas(database, ana, 1)
    bea = make_user(database, "bea@example.org", admin=False)
    form = drawn(database, ana, pid)
    with pytest.raises(NotFoundError):
        save_curation(database, bea, pid, form, replace(form, favorite=True))
    with pytest.raises(NotFoundError):
        save_curation(database, ana, 10**9, form, replace(form, favorite=True))
    with pytest.raises(ValidationError):
        save_curation(database, ana, pid, form, replace(form, favorite=True, rating=6))
    set_tags(database, ana, pid, [f"t{n}" for n in range(MAX_TAGS)])
    with pytest.raises(ValidationError):  # a 21st tag, though the form drew none of the other 20
        save_curation(database, ana, pid, form, replace(form, tags=("one more",), favorite=True))
    assert stored(database, ana, pid) == (False, [f"t{n}" for n in range(MAX_TAGS)], None)


@pytest.mark.parametrize(
    ("current", "drawn_tags", "edited", "expected"),
    [
        (["a"], [], ["b"], ["a", "b"]),
        (["a", "b"], ["a"], [], ["b"]),
        (["A", "b"], ["a"], [], ["b"]),  # removed ignoring case
        (["a"], ["a"], ["A"], ["A"]),  # a case change
        (["B"], [], ["b"], ["B"]),  # already there in another case
        ([], ["gone"], ["gone", "new"], ["new"]),  # someone removed it meanwhile: it stays removed
    ],
)
def test_merge_tags(current: list[str], drawn_tags: list[str], edited: list[str], expected: list[str]) -> None:
    assert merge_tags(current, drawn_tags, edited) == expected


# --- races inside one transaction --------------------------------------------------------------------------


def _lock_waiters(database: Database) -> int:
    """How many PostgreSQL backends wait for a lock (0 on SQLite, whose writers wait in-process)."""
    if database.dialect != "postgresql":
        return 0
    with database.engine.connect() as conn:
        query = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        return int(conn.execute(sa.text(query)).scalar_one())


def _in_a_transaction(thread: threading.Thread) -> bool:
    """Whether ``thread`` is inside ``Database.transaction`` now (sys._current_frames: documented, for debugging
    and tests like this one)."""
    frame = sys._current_frames().get(thread.ident or -1)
    while frame is not None:
        if frame.f_code is TRANSACTION_CODE:
            return True
        frame = frame.f_back
    return False


@contextmanager
def racing(database: Database, other: Callable[[], Any], *, after: str) -> Iterator[list[BaseException]]:
    """Within the block, right after the block's first statement on ``database`` whose SQL holds ``after`` (in
    the block's thread), run ``other`` in a thread and go on only once it has finished or is blocked: a PostgreSQL
    lock wait, or on SQLite, when the statement ran in a write transaction, the other thread inside
    ``Database.transaction``, where it queues in-process for the write lock this thread holds. Joins it at the
    end; its exception, if any, is in the yielded list."""
    errors: list[BaseException] = []
    done = threading.Event()
    block_thread = threading.get_ident()
    started: list[threading.Thread] = []

    def run_other() -> None:
        try:
            other()
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    def after_statement(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if started or threading.get_ident() != block_thread or after not in statement:
            return
        # Database.transaction begins SQLite's write transactions with BEGIN IMMEDIATE, holding its write lock.
        holds_sqlite_write_lock = bool(conn.get_execution_options().get("sqlite_immediate"))
        thread = threading.Thread(target=run_other, daemon=True)
        started.append(thread)
        thread.start()
        deadline = time.monotonic() + BLOCKED_OR_DONE_SECONDS
        while not done.is_set() and time.monotonic() < deadline:
            if _lock_waiters(database) or (holds_sqlite_write_lock and _in_a_transaction(thread)):
                return
            done.wait(0.01)

    sa.event.listen(database.engine, "after_cursor_execute", after_statement)
    try:
        yield errors
    finally:
        sa.event.remove(database.engine, "after_cursor_execute", after_statement)
        for thread in started:
            thread.join(timeout=60)
            assert not thread.is_alive(), "the other writer never finished"
    assert started, "the block ran no statement"


def test_two_saves_at_the_same_moment_keep_both_tags(database: Database, ana: User) -> None:
    [pid] = add_personas(database, ana, 1)
    form = drawn(database, ana, pid)

    def other_tab() -> None:
        save_curation(database, ana, pid, form, replace(form, tags=("B",)))

    with racing(database, other_tab, after="generation_results") as errors:
        save_curation(database, ana, pid, form, replace(form, tags=("A",)))
    assert not errors
    assert sorted(stored(database, ana, pid)[1]) == ["A", "B"]


def test_a_bulk_tag_and_a_single_edit_racing_it_lose_nothing(database: Database, ana: User) -> None:
    ids = add_personas(database, ana, 4)
    view = GalleryFilter(task_ids=["curation0001"])
    form = drawn(database, ana, ids[1])
    edit = replace(form, tags=("x",), rating=5)
    # The edit runs once the bulk tag has read its first tags.
    with racing(database, lambda: save_curation(database, ana, ids[1], form, edit), after="tags") as errors:
        assert bulk_curate(database, ana, view, add_tag="pilot") == 4
    assert not errors
    favourite, tags, rating = stored(database, ana, ids[1])
    assert (favourite, sorted(tags), rating) == (False, ["pilot", "x"], 5)
    for pid in ids:
        assert "pilot" in stored(database, ana, pid)[1]

    # And the other way round: an edit in progress while the bulk tag runs.
    form = drawn(database, ana, ids[2])

    def bulk_tag() -> None:
        bulk_curate(database, ana, view, add_tag="second")

    with racing(database, bulk_tag, after="generation_results") as errors:
        save_curation(database, ana, ids[2], form, replace(form, tags=(*form.tags, "y")))
    assert not errors
    assert sorted(stored(database, ana, ids[2])[1]) == ["pilot", "second", "y"]
    assert all("second" in stored(database, ana, pid)[1] for pid in ids)


def test_bulk_tag_is_one_statement_that_respects_case_and_the_tag_limit(database: Database, ana: User) -> None:
    ids = add_personas(database, ana, 3)
    view = GalleryFilter(task_ids=["curation0001"])
    set_tags(database, ana, ids[0], ["Ávila"])
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE"):
            statements.append(statement)

    sa.event.listen(database.engine, "before_cursor_execute", record)
    try:
        assert bulk_curate(database, ana, view, add_tag="ávila") == 2  # the first has it in another case
    finally:
        sa.event.remove(database.engine, "before_cursor_execute", record)
    assert len(statements) == 1
    assert [stored(database, ana, pid)[1] for pid in ids] == [["Ávila"], ["ávila"], ["ávila"]]

    set_tags(database, ana, ids[1], [f"t{n}" for n in range(MAX_TAGS)])
    with pytest.raises(ValidationError, match="1 persona"):
        bulk_curate(database, ana, view, add_tag="more")
    assert all("more" not in stored(database, ana, pid)[1] for pid in ids)  # nothing written
    assert bulk_curate(database, ana, view, add_tag="t0") == 2  # the full one has it already: fine
