"""The image stage's transactions: a persona's last block and its completion commit together, and a crash
before that commit still resumes to a complete persona."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import db.queries as q
import pipeline.stages.images.stage as image_stage
from db.models import PersonaStatus, TaskStatus
from db.session import Database
from pipeline.core.errors import ProviderError
from pipeline.storage.local import LocalStorage
from pipeline.submit.task_control import task_status
from tests.factories import local_storage, make_settings, make_user, results_of, run_worker, submit
from tests.integration.test_executor import referenced_keys, stored_files

RunTask = Callable[[int], tuple[str, LocalStorage]]


@pytest.fixture
def run_image_task(database: Database, db_url: str, tmp_path: Path) -> RunTask:
    """Submits a task of ``count`` personas with 8 images each (two blocks) and runs a worker until it ends;
    returns the task id and the storage. Patch the stage before calling it."""

    def run(count: int) -> tuple[str, LocalStorage]:
        settings = make_settings(db_url, tmp_path)
        storage = local_storage(tmp_path)
        task_id = submit(database, settings, make_user(database), count=count, images=8)
        run_worker(database, storage, settings)
        return task_id, storage

    return run


def test_last_block_and_completion_share_one_transaction(
    database: Database, run_image_task: RunTask, monkeypatch: pytest.MonkeyPatch
) -> None:
    appends: dict[int, list[Any]] = {}
    marks: dict[int, list[tuple[str, Any]]] = {}
    append_images, mark_persona = q.append_images, q.mark_persona

    def record_append(session: Any, row: Any, *args: Any, **kwargs: Any) -> None:
        appends.setdefault(row.id, []).append(session)
        append_images(session, row, *args, **kwargs)

    def record_mark(session: Any, row: Any, status: str, *args: Any, **kwargs: Any) -> None:
        marks.setdefault(row.id, []).append((status, session))
        mark_persona(session, row, status, *args, **kwargs)

    monkeypatch.setattr(q, "append_images", record_append)
    monkeypatch.setattr(q, "mark_persona", record_mark)
    task_id, _ = run_image_task(3)

    assert task_status(database, task_id).status == TaskStatus.COMPLETED.value
    rows = results_of(database, task_id)
    assert len(rows) == 3
    for row in rows:
        assert row.status == PersonaStatus.COMPLETED.value and row.image_count == 8
        assert len(appends[row.id]) == 2  # two blocks, each its own transaction
        assert [status for status, _ in marks[row.id]] == [PersonaStatus.COMPLETED.value]
        assert marks[row.id][0][1] is appends[row.id][-1]  # the same session: the same transaction


def test_crash_before_the_last_block_commits_resumes_to_a_complete_persona(
    database: Database, run_image_task: RunTask, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(image_stage, "PERSONA_RETRY_PAUSE_SECONDS", 0.0)
    append_images = q.append_images
    failed: list[int] = []

    def failing_append(session: Any, row: Any, uris: list[str], metas: list[Any], extra: dict[str, Any]) -> None:
        append_images(session, row, uris, metas, extra)
        if extra["block"] == 1 and not failed:  # after the writes of the last block, before its commit
            failed.append(row.id)
            raise ProviderError("test", "connection reset before the commit", retryable=True)

    monkeypatch.setattr(q, "append_images", failing_append)
    task_id, storage = run_image_task(2)

    report = task_status(database, task_id)
    assert report.status == TaskStatus.COMPLETED.value, report.error_log
    assert len(failed) == 1
    rows = results_of(database, task_id)
    for row in rows:
        assert row.status == PersonaStatus.COMPLETED.value
        assert row.image_count == 8 and len(row.images) == 8
        assert [b["block"] for b in row.image_meta["blocks"]] == [0, 1]  # the rolled-back block made once more
        assert len(row.image_meta["images"]) == 8
    assert referenced_keys(rows) == stored_files(storage.root)  # the retried block overwrote the same keys
