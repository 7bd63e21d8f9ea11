"""Issue 20, item 2: tasks the original system left unfinished are held at upgrade, with a configuration frozen
from the settings rows and a seed; no worker claims them until an administrator resumes them (then they run with
the frozen prompts) or cancels them, on the Tasks page or with the CLI. SQLite and PostgreSQL."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import sqlalchemy as sa

import db.queries as q
from db.models import TaskStatus, utcnow
from db.session import Database, make_engine, migrate
from pipeline.cli import main
from pipeline.core.config import Settings, reset_settings_cache
from pipeline.core.domain import BIO_PROMPT_KEYS, CONFIG_TOGGLES, PersonaBatch, PersonaRequest
from pipeline.core.errors import AccessDenied, ConflictError
from pipeline.core.identity import IDENTITY_SETTING_KEY
from pipeline.providers.registry import ProviderCache, Providers
from pipeline.submit.submission import build_snapshot
from pipeline.submit.task_control import cancel_task, rerun_task, resume_task, retry_task
from tests.factories import local_storage, make_settings, offline_env, run_worker, task_row

ROOT = Path(__file__).resolve().parents[2]
SEED = "fbc78f685fa2"  # the original system's last revision
FACEBOOK_PROMPT = "Custom facebook prompt of the original ✓"


def migration_module() -> ModuleType:
    path = ROOT / "alembic" / "versions" / "d1a2b3c4d5e6_held_legacy_tasks.py"
    spec = importlib.util.spec_from_file_location("held_legacy_tasks", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def legacy_database(db_url: str) -> None:
    """A database of the original system, as it stopped: a pending and a generating-data task (the latter with
    one persona stored), a completed one, and a customised bio prompt and toggle; then upgraded to head."""
    migrate(db_url, SEED)
    engine = make_engine(db_url)
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO users (id, email, password_hash, created_at, is_active) VALUES "
            "(1, 'first@example.org', '$2b$12$abcdefghijklmnopqrstuv', '2026-01-30 10:00:00', TRUE), "
            "(2, 'second@example.org', '$2b$12$zyxwvutsrqponmlkjihgfe', '2026-02-01 10:00:00', TRUE)"))
        conn.execute(sa.text("UPDATE settings SET value = :v WHERE key = 'bio_prompt_facebook'"), {"v": FACEBOOK_PROMPT})
        conn.execute(sa.text("UPDATE config SET value = TRUE WHERE key = 'crop_white_borders'"))
        for pk, task_id, status in ((1, "legacy01", "pending"), (2, "legacy02", "generating-data"),
                                    (3, "legacy03", "completed")):
            conn.execute(sa.text(
                "INSERT INTO generation_tasks (id, task_id, user_id, persona_description, bio_language, "
                "number_to_generate, images_per_persona, status, created_at, updated_at) VALUES "
                "(:pk, :tid, 2, 'Ciclistas em Lisboa', 'Portuguese', 2, 4, :status, "
                "'2026-02-10 10:00:00', '2026-02-10 11:00:00')"), {"pk": pk, "tid": task_id, "status": status})
        conn.execute(sa.text(
            "INSERT INTO generation_results (task_id, batch_number, firstname, lastname, gender, bio_facebook) "
            "VALUES (2, 1, 'Inês', 'Saraiva', 'f', 'Olá')"))
    engine.dispose()
    migrate(db_url)


class RecordingProviders(ProviderCache):
    """The offline providers, recording the bio prompts of every persona request."""

    def __init__(self, settings: Settings):
        super().__init__(settings)
        self.prompts: list[dict[str, str]] = []

    def for_names(self, persona: str, image: str) -> Providers:
        base = super().for_names(persona, image)
        outer = self

        class Persona:
            name = base.persona.name

            def generate(self, request: PersonaRequest) -> PersonaBatch:
                outer.prompts.append(dict(request.bio_prompts))
                result: PersonaBatch = base.persona.generate(request)
                return result

            def __getattr__(self, attr: str) -> Any:
                return getattr(base.persona, attr)

        return Providers(Persona(), base.prompt, base.image)  # type: ignore[arg-type]


@pytest.fixture
def legacy(db_url: str) -> Iterator[Database]:
    legacy_database(db_url)
    db = Database(db_url)
    try:
        yield db
    finally:
        db.dispose()


def users(db: Database) -> tuple[Any, Any]:
    with db.session() as session:
        admin = q.get_user_by_email(session, "first@example.org")
        member = q.get_user_by_email(session, "second@example.org")
    assert admin is not None and admin.is_admin and member is not None and not member.is_admin
    return admin, member


def test_the_migration_writes_the_keys_the_pipeline_reads() -> None:
    module = migration_module()
    assert module.BIO_PROMPT_KEYS == BIO_PROMPT_KEYS
    assert module.CONFIG_TOGGLES == CONFIG_TOGGLES
    assert module.IDENTITY_SETTING_KEY == IDENTITY_SETTING_KEY
    assert set(module.FINISHED) == set(TaskStatus.finished())
    assert TaskStatus.HELD.value == module.HELD


def test_unfinished_legacy_tasks_are_held_with_a_frozen_config(legacy: Database) -> None:
    held = [task_row(legacy, t) for t in ("legacy01", "legacy02")]
    for task in held:
        assert task.status == TaskStatus.HELD.value
        assert task.seed is not None and 0 <= task.seed < 2**31
        assert task.lease_expires_at is None and task.worker_id is None
        snapshot = task.config_snapshot
        assert set(snapshot["bio_prompts"]) == set(BIO_PROMPT_KEYS)
        assert all(snapshot["bio_prompts"].values())  # the original's four prompts, none empty
        assert snapshot["bio_prompts"]["bio_prompt_facebook"] == FACEBOOK_PROMPT
        assert snapshot["toggles"] == {key: key == "crop_white_borders" for key in CONFIG_TOGGLES}
        assert snapshot["identity"] == {"mode": "auto"}
    finished = task_row(legacy, "legacy03")
    assert finished.status == "completed" and finished.config_snapshot is None  # finished tasks are left as they are


def test_no_worker_claims_a_held_task_and_a_resumed_one_runs_with_the_frozen_prompts(
    legacy: Database, db_url: str, tmp_path: Path
) -> None:
    settings = make_settings(db_url, tmp_path)
    storage = local_storage(tmp_path)
    admin, member = users(legacy)
    providers = RecordingProviders(settings)
    run_worker(legacy, storage, settings, providers=providers)
    assert providers.prompts == []  # nothing was called
    assert [task_row(legacy, t).status for t in ("legacy01", "legacy02")] == ["held", "held"]
    with legacy.session() as session:
        assert q.count_waiting_tasks(session, utcnow()) == 0
        assert not q.runnable_task_exists(session, utcnow())

    with pytest.raises(AccessDenied):  # the owner is not an administrator: resuming spends money
        resume_task(legacy, settings, "legacy01", member)
    with pytest.raises(ConflictError):  # its configuration is completed only when it is resumed
        rerun_task(legacy, "legacy01", member)
    assert task_row(legacy, "legacy01").status == "held"

    assert resume_task(legacy, settings, "legacy01", admin) == TaskStatus.PENDING.value
    run_worker(legacy, storage, settings, providers=providers)
    task = task_row(legacy, "legacy01")
    assert task.status == TaskStatus.COMPLETED.value
    assert providers.prompts, "the resumed task called the persona provider"
    for prompts in providers.prompts:
        assert set(prompts) == set(BIO_PROMPT_KEYS) and all(prompts.values())
        assert prompts["bio_prompt_facebook"] == FACEBOOK_PROMPT
    # The snapshot it ran with has every key a submitted task's has; the frozen parts are kept.
    assert set(build_snapshot(legacy, settings)) <= set(task.config_snapshot)
    assert task.config_snapshot["providers"] == {"persona": "offline", "prompt": "offline", "image": "offline"}
    assert task.config_snapshot["toggles"]["crop_white_borders"] is True
    assert task_row(legacy, "legacy02").status == "held"  # the other one still waits

    assert cancel_task(legacy, "legacy02", admin) == TaskStatus.CANCELLED.value
    with pytest.raises(ConflictError):
        resume_task(legacy, settings, "legacy02", admin)


def test_the_snapshot_frozen_by_the_migration_is_accepted_by_the_worker(
    legacy: Database, db_url: str, tmp_path: Path
) -> None:
    """The upgrade's snapshot as it is (not completed by a resume) runs: prompts and toggles from it."""
    settings = make_settings(db_url, tmp_path)
    with legacy.transaction() as session:
        task = q.get_task(session, "legacy02")
        assert task is not None
        task.status = TaskStatus.PENDING.value
    providers = RecordingProviders(settings)
    run_worker(legacy, local_storage(tmp_path), settings, providers=providers)
    task = task_row(legacy, "legacy02")
    assert task.status == TaskStatus.COMPLETED.value, task.error_log
    assert providers.prompts and all(p["bio_prompt_facebook"] == FACEBOOK_PROMPT for p in providers.prompts)
    with legacy.session() as session:
        names = [r.firstname for r in q.list_results(session, task.id)]
    assert len(names) == 2 and "Inês" in names  # the persona the original stored is kept, one more made


def test_a_legacy_task_without_a_frozen_config_cannot_be_retried(legacy: Database) -> None:
    admin, _ = users(legacy)
    with legacy.transaction() as session:
        task = q.get_task(session, "legacy03")
        assert task is not None
        task.status = TaskStatus.FAILED.value
    with pytest.raises(ConflictError, match="no frozen config"):
        retry_task(legacy, "legacy03", admin)
    assert task_row(legacy, "legacy03").status == TaskStatus.FAILED.value


def test_cli_resumes_and_cancels_held_tasks(
    legacy: Database, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for key, value in offline_env(db_url, tmp_path).items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    reset_settings_cache()
    try:
        assert main(["status", "legacy01"]) == 0
        out = capsys.readouterr().out
        assert "held" in out and "may cost money" in out and "resume legacy01" in out
        assert main(["resume", "legacy03"]) == 2  # not held
        assert "only held tasks" in capsys.readouterr().err
        assert main(["resume", "legacy01"]) == 0
        assert capsys.readouterr().out.strip() == "pending"
        assert main(["cancel", "legacy02"]) == 0
        assert capsys.readouterr().out.strip() == "cancelled"
    finally:
        reset_settings_cache()
    assert task_row(legacy, "legacy01").status == "pending"
    assert task_row(legacy, "legacy02").status == "cancelled"
