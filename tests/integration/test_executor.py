"""The executor on SQLite and PostgreSQL: full offline tasks, the global cap, cancel, retry, resume, leases."""

from __future__ import annotations

import hashlib
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import db.queries as q
from db.models import GenerationTask, PersonaStatus, TaskStatus, utcnow
from db.session import Database
from pipeline.core.domain import PersonaDraft
from pipeline.core.errors import ProviderError
from pipeline.providers.registry import ProviderCache, Providers
from pipeline.submit.settings import set_setting_value
from pipeline.submit.task_control import cancel_task, delete_task, rerun_task, retry_task, task_status
from pipeline.worker.executor import LOOK_SECONDS, POLL_SECONDS, Worker
from tests.factories import local_storage, make_settings, make_user, results_of, run_worker, submit, task_row


def stored_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and ".partial" not in p.parts}


def referenced_keys(rows: list[Any]) -> set[str]:
    keys: set[str] = set()
    for row in rows:
        if row.base_image_url:
            keys.add(row.base_image_url)
        for meta in (row.image_meta or {}).get("images", []):
            keys.add(meta["key"])
            keys.add(meta["thumb_key"])
    return keys


def test_offline_task_20_personas_8_images(database: Database, db_url: str, tmp_path: Path) -> None:
    settings = make_settings(db_url, tmp_path)
    storage = local_storage(tmp_path)
    user = make_user(database)
    task_id = submit(database, settings, user, count=20, images=8)

    run_worker(database, storage, settings)

    report = task_status(database, task_id)
    assert report.status == TaskStatus.COMPLETED.value, report.error_log
    assert (report.personas_done, report.images_done, report.personas_failed) == (20, 160, 0)
    rows = results_of(database, task_id)
    assert len(rows) == 20
    assert len({(r.firstname, r.lastname) for r in rows}) == 20
    assert len({(r.batch_number, r.slot) for r in rows}) == 20
    for row in rows:
        assert row.status == PersonaStatus.COMPLETED.value
        assert len(row.images) == 8 and row.image_count == 8
        assert all(key.startswith(f"{task_id}/") and key.endswith(".jpg") for key in row.images)
        assert row.base_image_url.startswith(f"{task_id}/")
    files = stored_files(storage.root)
    assert referenced_keys(rows) == files  # every object referenced, nothing orphaned
    assert len([f for f in files if not f.endswith("_thumb.jpg") and "/img" in f]) == 160
    for key in rows[0].images:
        assert (storage.root / key).read_bytes()[:3] == b"\xff\xd8\xff"  # .jpg holds JPEG bytes


def test_snapshot_is_frozen_at_submit(database: Database, db_url: str, tmp_path: Path) -> None:
    settings = make_settings(db_url, tmp_path)
    user = make_user(database)
    set_setting_value(database, "bio_prompt_x", "Short and witty.", actor=None)
    set_setting_value(database, "crop_white_borders", "true", actor=None)
    task_id = submit(database, settings, user)
    set_setting_value(database, "bio_prompt_x", "Changed later.", actor=None)
    set_setting_value(database, "crop_white_borders", "false", actor=None)
    snapshot = task_row(database, task_id).config_snapshot
    assert snapshot["bio_prompts"]["bio_prompt_x"] == "Short and witty."
    assert snapshot["toggles"] == {
        "randomize_face_base": False,
        "randomize_face_gender_lock": False,
        "crop_white_borders": True,
        "randomize_image_style": False,
    }
    assert snapshot["providers"] == {"persona": "offline", "prompt": "offline", "image": "offline"}


def test_same_seed_gives_identical_dataset(database: Database, db_url: str, tmp_path: Path) -> None:
    settings = make_settings(db_url, tmp_path)
    storage = local_storage(tmp_path)
    user = make_user(database)
    toggles = {"randomize_image_style": True, "crop_white_borders": True}
    first = submit(database, settings, user, count=12, images=4, seed=42, toggles=toggles)
    second = submit(database, settings, user, count=12, images=4, seed=42)
    other = submit(database, settings, user, count=12, images=4, seed=43)
    run_worker(database, storage, settings)

    def fingerprint(task_id: str) -> list[tuple[Any, ...]]:
        out = []
        for row in results_of(database, task_id):
            digests = tuple(hashlib.sha256((storage.root / k).read_bytes()).hexdigest() for k in row.images)
            base = hashlib.sha256((storage.root / row.base_image_url).read_bytes()).hexdigest()
            out.append((row.firstname, row.lastname, row.age, row.bio_x, base, digests))
        return out

    assert fingerprint(first) == fingerprint(second)
    assert fingerprint(first) != fingerprint(other)


def _overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda x: (x[0], x[1]))
    level = peak = 0
    for _, delta in events:
        level += delta
        peak = max(peak, level)
    return peak


def _intervals(database: Database, task_ids: list[str]) -> list[tuple[float, float]]:
    out = []
    for task_id in task_ids:
        task = task_row(database, task_id)
        assert task.started_at and task.completed_at, task_id
        out.append((task.started_at.timestamp(), task.completed_at.timestamp()))
    return out


class _Sampler(threading.Thread):
    """Samples the number of tasks holding a live lease, as the cap is defined."""

    def __init__(self, database: Database):
        super().__init__(daemon=True)
        self.database = database
        self.samples: list[int] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            with self.database.session() as session:
                self.samples.append(q.count_held_tasks(session, utcnow()))
            time.sleep(0.01)


@pytest.mark.parametrize("cap", [1, 2])
def test_cap_is_never_exceeded(database: Database, db_url: str, tmp_path: Path, cap: int) -> None:
    settings = make_settings(db_url, tmp_path, worker_task_slots=4)
    storage = local_storage(tmp_path)
    user = make_user(database)
    set_setting_value(database, "max_concurrent_tasks", str(cap), actor=None)
    task_ids = [submit(database, settings, user, count=6, images=8, seed=i) for i in range(3)]
    sampler = _Sampler(database)
    sampler.start()
    try:
        run_worker(database, storage, settings)
    finally:
        sampler.halt.set()
        sampler.join()
    assert all(task_row(database, t).status == TaskStatus.COMPLETED.value for t in task_ids)
    assert max(sampler.samples) <= cap
    assert _overlap(_intervals(database, task_ids)) <= cap
    if cap == 2:
        assert max(sampler.samples) == 2  # the cap is used, not just respected


@pytest.mark.parametrize(("cap", "claimed"), [(4, 3), (2, 2)])
def test_a_burst_of_submits_is_claimed_at_once_up_to_the_free_places_and_the_cap(
    database: Database, db_url: str, tmp_path: Path, cap: int, claimed: int
) -> None:
    settings = make_settings(db_url, tmp_path, worker_task_slots=3)
    user = make_user(database)
    set_setting_value(database, "max_concurrent_tasks", str(cap), actor=None)
    task_ids = [submit(database, settings, user, seed=i) for i in range(4)]
    worker = Worker(database, local_storage(tmp_path), settings, worker_id="burst")
    try:
        assert worker._claim_and_start()  # one claim transaction
        assert len(worker.held_task_ids) == claimed
        rows = [task_row(database, t) for t in task_ids]
        assert [r.worker_id for r in rows] == ["burst"] * claimed + [None] * (4 - claimed)  # the oldest first
    finally:
        worker.stop()
        worker._join_all()


def test_a_burst_is_shared_among_the_live_workers_and_a_stale_one_does_not_count(
    database: Database, db_url: str, tmp_path: Path
) -> None:
    """Three idle workers of four places, four tasks under a cap of four: the first to poll takes two and leaves
    one to each of the others (not all four in one process beside two idle ones). A worker gone quiet for a few
    heartbeats (killed) no longer counts."""
    settings = make_settings(db_url, tmp_path, worker_task_slots=4)
    set_setting_value(database, "max_concurrent_tasks", "4", actor=None)
    user = make_user(database)
    for i in range(4):
        submit(database, settings, user, seed=i)
    storage = local_storage(tmp_path)
    workers = [Worker(database, storage, settings, worker_id=f"w{i}") for i in range(3)]
    with database.transaction() as session:  # a worker killed a minute ago: its row is still there
        q.register_worker(session, worker_id="killed", hostname="h", pid=1, slots=4, now=utcnow() - timedelta(minutes=1))
    try:
        for worker in workers:
            worker._register()
        claimed = []
        for worker in workers:
            assert worker._claim_and_start()
            claimed.append(len(worker.held_task_ids))
        assert claimed == [2, 1, 1]
    finally:
        for worker in workers:
            worker.stop()
        for worker in workers:
            worker._join_all()
            worker._forget()
    with database.session() as session:  # the stopped workers left the registry; the killed one is left to expire
        assert [w.worker_id for w in q.live_workers(session, seen_after=utcnow() - timedelta(hours=1))] == ["killed"]


def test_lowering_the_cap_stops_new_claims_only(database: Database, db_url: str, tmp_path: Path) -> None:
    settings = make_settings(db_url, tmp_path)
    user = make_user(database)
    set_setting_value(database, "max_concurrent_tasks", "2", actor=None)
    a, b, c = (submit(database, settings, user, seed=i) for i in range(3))
    with database.transaction(immediate=True) as session:
        first = q.claim_next_task(session, worker_id="w1", now=utcnow(), lease_seconds=60, max_attempts=10)
    with database.transaction(immediate=True) as session:
        second = q.claim_next_task(session, worker_id="w2", now=utcnow(), lease_seconds=60, max_attempts=10)
    assert first is not None and second is not None and {first.task_id, second.task_id} == {a, b}
    with database.transaction(immediate=True) as session:
        assert q.claim_next_task(session, worker_id="w3", now=utcnow(), lease_seconds=60, max_attempts=10) is None
    set_setting_value(database, "max_concurrent_tasks", "1", actor=None)
    # the two running tasks keep their leases; still no new claim
    with database.transaction() as session:
        alive, _ = q.renew_leases(session, worker_id="w1", task_pks=[first.id], now=utcnow(), lease_seconds=60)
    assert alive == {first.id}
    with database.transaction(immediate=True) as session:
        assert q.claim_next_task(session, worker_id="w3", now=utcnow(), lease_seconds=60, max_attempts=10) is None
    assert task_row(database, c).status == TaskStatus.PENDING.value


def test_expired_lease_is_reclaimed_and_resumed(database: Database, db_url: str, tmp_path: Path) -> None:
    settings = make_settings(db_url, tmp_path)
    storage = local_storage(tmp_path)
    user = make_user(database)
    task_id = submit(database, settings, user, count=4, images=8)
    # A worker that died after claiming: its lease is in the past.
    with database.transaction(immediate=True) as session:
        task = q.claim_next_task(session, worker_id="dead", now=utcnow(), lease_seconds=-1, max_attempts=10)
        assert task is not None
    run_worker(database, storage, settings, worker_id="alive")
    task = task_row(database, task_id)
    assert task.status == TaskStatus.COMPLETED.value
    assert task.attempts == 2


def test_worker_that_lost_its_lease_stops_touching_the_task(database: Database, db_url: str, tmp_path: Path) -> None:
    settings = make_settings(db_url, tmp_path)
    user = make_user(database)
    submit(database, settings, user)
    with database.transaction(immediate=True) as session:
        task = q.claim_next_task(session, worker_id="w1", now=utcnow(), lease_seconds=60, max_attempts=10)
        assert task is not None
        pk = task.id
    with database.transaction() as session:  # someone else took it over
        row = session.get(GenerationTask, pk)
        row.worker_id = "w2"
    with database.transaction() as session:
        assert q.assert_lease(session, pk, "w1", utcnow()) is None
        alive, _ = q.renew_leases(session, worker_id="w1", task_pks=[pk], now=utcnow(), lease_seconds=60)
    assert alive == set()


class _SlowProviders(ProviderCache):
    """Offline providers with a delay per grid, to have time to act while a task runs."""

    def __init__(self, settings: Any, delay: float, fail_names: set[str] | None = None):
        super().__init__(settings)
        self.delay = delay
        self.fail_names = fail_names or set()

    def for_names(self, persona: str, image: str) -> Providers:
        base = super().for_names(persona, image)
        outer = self

        class Image:
            name = "slow-offline"

            def generate_base(self, persona: PersonaDraft, prompt: str, *, seed: int) -> bytes:
                if f"{persona.firstname} {persona.lastname}" in outer.fail_names:
                    raise ProviderError("slow-offline", "refused for the test", status=500)
                return base.image.generate_base(persona, prompt, seed=seed)

            def edit_face(self, face: bytes, persona: PersonaDraft, prompt: str, *, seed: int) -> bytes:
                return base.image.edit_face(face, persona, prompt, seed=seed)

            def make_grid(self, image: bytes, prompt: str, *, seed: int) -> bytes:
                time.sleep(outer.delay)
                return base.image.make_grid(image, prompt, seed=seed)

        return Providers(base.persona, base.prompt, Image())


def test_cancel_is_honoured_within_seconds(database: Database, db_url: str, tmp_path: Path) -> None:
    settings = make_settings(db_url, tmp_path, heartbeat_seconds=0.2)
    storage = local_storage(tmp_path)
    user = make_user(database)
    task_id = submit(database, settings, user, count=10, images=20)
    worker = Worker(database, storage, settings, providers=_SlowProviders(settings, 0.2), poll_seconds=0.05)
    thread = threading.Thread(target=worker.run, kwargs={"until_idle": True})
    thread.start()
    deadline = time.time() + 30
    while task_row(database, task_id).status != TaskStatus.GENERATING_IMAGES.value and time.time() < deadline:
        time.sleep(0.05)
    asked = time.time()
    assert cancel_task(database, task_id) == "cancel-requested"
    thread.join(timeout=30)
    assert not thread.is_alive()
    task = task_row(database, task_id)
    assert task.status == TaskStatus.CANCELLED.value
    assert task.completed_at.timestamp() - asked < 5
    assert task.lease_expires_at is None
    images_done = task_status(database, task_id).images_done
    assert images_done < 200


def test_cancel_pending_task_is_immediate(database: Database, db_url: str, tmp_path: Path) -> None:
    settings = make_settings(db_url, tmp_path)
    task_id = submit(database, settings, make_user(database))
    assert cancel_task(database, task_id) == TaskStatus.CANCELLED.value
    assert task_row(database, task_id).status == TaskStatus.CANCELLED.value


def test_task_whose_providers_do_not_load_fails_with_the_reason(database: Database, db_url: str, tmp_path: Path) -> None:
    """A snapshot naming a provider this version lacks fails that task, with the reason, and the queue moves on
    (released instead, the oldest waiting task would be claimed again and again)."""
    settings = make_settings(db_url, tmp_path)
    user = make_user(database)
    broken = submit(database, settings, user, count=2)
    fine = submit(database, settings, user, count=2)
    with database.transaction() as session:
        task = q.get_task(session, broken)
        assert task is not None
        task.config_snapshot = {**task.config_snapshot, "providers": {"persona": "retired", "image": "offline"}}

    worker = run_worker(database, local_storage(tmp_path), settings)

    row = task_row(database, broken)
    assert row.status == TaskStatus.FAILED.value
    assert "cannot start: unknown persona provider 'retired'" in row.error_log
    assert row.lease_expires_at is None and row.worker_id is None
    assert task_row(database, fine).status == TaskStatus.COMPLETED.value
    assert [task_id for task_id, _ in worker.finished] == [fine]


def test_partial_then_retry_only_failed(database: Database, db_url: str, tmp_path: Path) -> None:
    settings = make_settings(db_url, tmp_path)
    storage = local_storage(tmp_path)
    user = make_user(database)
    task_id = submit(database, settings, user, count=6, images=4)
    run_worker(database, storage, settings)
    names = [f"{r.firstname} {r.lastname}" for r in results_of(database, task_id)]
    # Fail two named personas on a re-run of the same seed: same names come back.
    rerun = rerun_task(database, task_id, user, same_seed=True)
    providers = _SlowProviders(settings, 0.0, fail_names=set(names[:2]))
    run_worker(database, storage, settings, providers=providers)
    report = task_status(database, rerun)
    assert report.status == TaskStatus.PARTIAL.value
    assert report.personas_failed == 2 and report.personas_done == 4
    assert "refused for the test" in (report.error_log or "")
    done_before = {r.id: list(r.images) for r in results_of(database, rerun) if r.status == "completed"}

    assert retry_task(database, rerun) == 2
    run_worker(database, storage, settings)  # healthy providers now
    report = task_status(database, rerun)
    assert report.status == TaskStatus.COMPLETED.value
    assert (report.personas_done, report.images_done) == (6, 24)
    after = {r.id: list(r.images) for r in results_of(database, rerun)}
    assert all(after[i] == imgs for i, imgs in done_before.items())  # finished personas untouched


def test_delete_removes_rows_and_objects(database: Database, db_url: str, tmp_path: Path) -> None:
    settings = make_settings(db_url, tmp_path)
    storage = local_storage(tmp_path)
    user = make_user(database)
    keep = submit(database, settings, user, count=2)
    doomed = submit(database, settings, user, count=2)
    run_worker(database, storage, settings)
    removed = delete_task(database, storage, doomed)
    assert removed > 0
    assert task_row(database, doomed) is None
    assert all(not f.startswith(doomed) for f in stored_files(storage.root))
    assert any(f.startswith(keep) for f in stored_files(storage.root))


def test_users_cannot_touch_other_users_tasks(database: Database, db_url: str, tmp_path: Path) -> None:
    from pipeline.core.errors import NotFoundError

    settings = make_settings(db_url, tmp_path)
    owner = make_user(database, "owner@example.org", admin=False)
    other = make_user(database, "other@example.org", admin=False)
    task_id = submit(database, settings, owner)
    for action in (task_status, cancel_task, retry_task):
        with pytest.raises(NotFoundError):
            action(database, task_id, other)
    with pytest.raises(NotFoundError):
        delete_task(database, local_storage(tmp_path), task_id, other)
    assert task_status(database, task_id, owner).task_id == task_id


def test_a_slow_worker_is_never_declared_dead_while_it_heartbeats(
    database: Database, db_url: str, tmp_path: Path
) -> None:
    """Provider calls longer than the lease: the heartbeat keeps the lease, so a second worker polling all along
    never takes the task over (one claim, one worker). The lease leaves room for a stall of over a second of the
    whole process, which a loaded 2-core machine does show (a 0.7 s one was measured)."""
    settings = make_settings(db_url, tmp_path, lease_seconds=2.0, heartbeat_seconds=0.2)
    storage = local_storage(tmp_path)
    task_id = submit(database, settings, make_user(database), count=2, images=4)
    slow = Worker(database, storage, settings, providers=_SlowProviders(settings, 3.0), poll_seconds=0.05,
                  worker_id="slow")
    thread = threading.Thread(target=slow.run, kwargs={"until_idle": True})
    thread.start()
    while task_row(database, task_id).worker_id != "slow":
        time.sleep(0.02)
    rival = Worker(database, storage, settings, poll_seconds=0.05, worker_id="rival")
    rival_thread = threading.Thread(target=rival.run, kwargs={"until_idle": True})
    rival_thread.start()
    thread.join(timeout=60)
    rival_thread.join(timeout=60)
    task = task_row(database, task_id)
    assert (task.status, task.attempts) == (TaskStatus.COMPLETED.value, 1)


def test_sqlite_busy_database_is_waited_for_not_surfaced(tmp_path: Path) -> None:
    """Another process holds SQLite's write lock for a while: the worker waits (busy timeout) and the task
    completes without an error."""
    import sqlite3

    from db.session import migrate

    url = f"sqlite:///{tmp_path / 'busy.db'}"
    migrate(url)
    database = Database(url)
    try:
        settings = make_settings(url, tmp_path)
        task_id = submit(database, settings, make_user(database), count=3, images=4)
        blocker = sqlite3.connect(tmp_path / "busy.db", isolation_level=None, check_same_thread=False)
        blocker.execute("BEGIN IMMEDIATE")  # the write lock, as another process would hold it
        release = threading.Timer(1.5, lambda: blocker.execute("COMMIT"))
        release.start()
        run_worker(database, local_storage(tmp_path), settings)
        release.join()
        blocker.close()
        task = task_row(database, task_id)
        assert task.status == TaskStatus.COMPLETED.value and not task.error_log
    finally:
        database.dispose()


def test_a_task_submitted_elsewhere_is_claimed_well_before_the_next_poll(
    database: Database, db_url: str, tmp_path: Path
) -> None:
    """A submit in another process cannot wake the worker: it reads whether a task can start every LOOK_SECONDS, and
    claims then instead of at its next poll."""
    settings = make_settings(db_url, tmp_path)
    user = make_user(database)
    worker = Worker(database, local_storage(tmp_path), settings, worker_id="looking", poll_seconds=10.0)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        time.sleep(0.3)  # the worker is in its idle wait, its next poll 10 s away
        task_id = submit(database, settings, user, count=1, images=4, seed=1)
        started = time.monotonic()
        while task_row(database, task_id).worker_id != "looking" and time.monotonic() - started < 15:
            time.sleep(0.01)
        assert time.monotonic() - started < 5 * LOOK_SECONDS + 2  # not the poll's 10 s
    finally:
        worker.stop()
        thread.join(timeout=30)
    assert not thread.is_alive()


def test_an_idle_worker_claims_a_new_task_at_its_next_poll_or_at_once_when_woken(
    database: Database, db_url: str, tmp_path: Path
) -> None:
    """An idle worker looks for work every ``POLL_SECONDS`` (a second: provider calls take seconds) and at once
    when ``wake()`` is called, as after a submit in the same process."""
    settings = make_settings(db_url, tmp_path)
    user = make_user(database)
    worker = Worker(database, local_storage(tmp_path), settings, worker_id="idle")
    assert worker.poll_seconds == POLL_SECONDS == 1.0
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()

    def claimed_after(task_id: str, limit: float = 10.0) -> float:
        started = time.monotonic()
        while task_row(database, task_id).worker_id != "idle" and time.monotonic() - started < limit:
            time.sleep(0.01)
        return time.monotonic() - started

    try:
        time.sleep(0.3)  # the worker is in its idle wait
        polled = claimed_after(submit(database, settings, user, count=1, images=4, seed=1))
        assert polled < POLL_SECONDS + 0.5  # found by the next poll, without a wake-up
        while worker.held_task_ids:  # the task finished; the worker is idle again
            time.sleep(0.02)
        time.sleep(0.1)
        task_id = submit(database, settings, user, count=1, images=4, seed=2)
        worker.wake()
        assert claimed_after(task_id) < 0.5  # woken: not a whole poll later
    finally:
        worker.stop()
        thread.join(timeout=30)
    assert not thread.is_alive()
