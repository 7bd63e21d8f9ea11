"""A whole task through the real wire formats: Flowise personas and grid prompts, OpenAI images, S3 media and
an S3 face library (moto), on SQLite and PostgreSQL — with faults and a moderation refusal on the way."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import db.queries as q
from db.session import Database
from pipeline.core.domain import PersonaDraft
from pipeline.storage import open_storage
from pipeline.storage.s3 import S3Storage
from pipeline.submit.task_control import delete_task, task_status
from tests.factories import local_storage, make_settings, make_user, results_of, run_worker, submit, task_row
from tests.fakes.s3 import client, moto_s3, unique_bucket  # noqa: F401
from tests.fakes.servers import (
    FLOWISE_PERSONA_FLOW,
    FLOWISE_PROMPT_FLOW,
    FakeFlowise,
    FakeOpenAI,
    portrait_png,
    rate_limited,
    refusal,
    server_error,
    truncated,
)

KEY = "test-key-not-secret"


@pytest.fixture
def fakes() -> Iterator[tuple[FakeFlowise, FakeOpenAI]]:
    with FakeFlowise() as flowise, FakeOpenAI() as openai:
        yield flowise, openai


def test_flowise_openai_s3_task_with_faults(
    database: Database, db_url: str, tmp_path: Path, moto_s3: str, fakes: tuple[FakeFlowise, FakeOpenAI]  # noqa: F811
) -> None:
    flowise, openai = fakes
    bucket = unique_bucket(moto_s3, "stack")
    faces = S3Storage(bucket, "faces", endpoint_url=moto_s3)
    for gender in ("male", "female"):
        for i in range(3):
            faces.put(f"{gender}/face_{i:04d}.png", portrait_png(tint=(100 + 40 * i, 120, 160)), "image/png")
    settings = make_settings(
        db_url, tmp_path,
        persona_provider="flowise", flowise_base_url=flowise.url, flowise_api_key=KEY,
        flowise_persona_flow_id=FLOWISE_PERSONA_FLOW, flowise_prompt_flow_id=FLOWISE_PROMPT_FLOW,
        image_provider="openai", openai_base_url=f"{openai.url}/v1", openai_api_key=KEY,
        storage_url=f"s3://{bucket}/avatars", s3_endpoint_url=moto_s3, faces_url=f"s3://{bucket}/faces",
        http_timeout_seconds=5.0,
    )
    storage = open_storage(settings.storage_url, endpoint_url=settings.s3_endpoint_url)
    user = make_user(database)
    task_id = submit(database, settings, user, count=4, images=8,
                     toggles={"randomize_face_base": True, "randomize_face_gender_lock": True,
                              "crop_white_borders": True, "randomize_image_style": True})
    # Transient faults first: a 429 with Retry-After, a 500 and a truncated body, then a refused face.
    flowise.script(rate_limited(retry_after=0.2), server_error(500), truncated())
    openai.script(refusal())

    run_worker(database, storage, settings)

    report = task_status(database, task_id)
    assert (report.status, report.personas_done, report.images_done) == ("completed", 4, 32), report.error_log
    wire = flowise.start_state(flowise.posts()[0])
    assert wire["requested_amount"] == "4" and wire["bio_language"] == "Portuguese (Portugal)"
    assert {"instructions_facebook", "instructions_instagram", "instructions_x", "instructions_tiktok"} <= set(wire)
    assert all(r.headers.get("Authorization") == f"Bearer {KEY}" for r in flowise.posts())

    edits = [r for r in openai.posts() if r.path.endswith("/images/edits")]
    assert edits and all(u.field == "image[]" and u.content_type == "image/png" for r in edits for u in r.files)
    s3 = client(moto_s3)
    rows = results_of(database, task_id)
    for row in rows:
        persona = PersonaDraft(**{k: getattr(row, k) for k in PersonaDraft.__dataclass_fields__})
        face = row.image_meta["base"]["face_reference"]
        assert face.startswith({"m": "male/", "f": "female/"}.get(persona.gender, ""))  # gender lock
        assert row.base_image_url.startswith(f"s3://{bucket}/avatars/{task_id}/")
        assert len(row.images) == 8
        for uri in row.images:
            key = uri.removeprefix(f"s3://{bucket}/")
            head = s3.head_object(Bucket=bucket, Key=key)
            assert key.endswith(".jpg") and head["ContentType"] == "image/jpeg"
    face_edits = [r for r in edits if "grid" not in r.fields.get("prompt", "").lower()]
    assert len(face_edits) == 4 + 1  # one face refused on moderation, another face tried for that persona
    assert sum(1 for r in rows if r.image_meta["base"]["face_reference"]) == 4
    # The identity check (on by default for a real image provider) read every image back from S3 and the
    # library faces too; the fake model's drawn portraits hold no real face, which is reported, not scored.
    identity = task_row(database, task_id).quality_summary["identity"]
    assert identity["personas_analysed"] == 4 and identity["personas_not_analysed"] == 0
    assert identity["flags"].get("no_face") == 4 and identity["personas_scored"] == 0
    assert all(len(r.image_meta["identity"]["images"]) == 8 and "reference" in r.image_meta["identity"] for r in rows)

    listed = storage.list_keys(f"{task_id}/")
    assert len(listed) == 4 * (1 + 8 * 2)  # base + every image and its thumbnail, nothing orphaned
    delete_task(database, storage, task_id)
    assert storage.list_keys(f"{task_id}/") == []
    with database.session() as session:
        assert q.get_task(session, task_id) is None


def test_one_call_in_five_fails_and_the_task_still_ends_well(
    database: Database, db_url: str, tmp_path: Path, fakes: tuple[FakeFlowise, FakeOpenAI],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """20% of calls time out, answer 429 (with and without Retry-After) or 500, or send broken bodies; a few
    image calls are refused on moderation (then asked again with another idea, or without the bio). The whole
    dataset is still made, within a bounded number of attempts, and the backoff shows in the logs."""
    import logging
    import random

    from tests.fakes.servers import Behaviour, bad_json, malformed, slow

    flowise, openai = fakes
    settings = make_settings(
        db_url, tmp_path,
        persona_provider="flowise", flowise_base_url=flowise.url, flowise_api_key=KEY,
        flowise_persona_flow_id=FLOWISE_PERSONA_FLOW, flowise_prompt_flow_id=FLOWISE_PROMPT_FLOW,
        image_provider="openai", openai_base_url=f"{openai.url}/v1", openai_api_key=KEY,
        http_timeout_seconds=1.5, http_max_attempts=5,
    )
    rng = random.Random(5)
    faults = [lambda: slow(2.5), lambda: rate_limited(retry_after=0.1), lambda: rate_limited(retry_after=None),
              lambda: server_error(500), lambda: server_error(503), truncated, bad_json, malformed]

    def plan(n: int, refusals: int = 0) -> list[Behaviour]:
        steps = [rng.choice(faults)() if rng.random() < 0.2 else Behaviour() for _ in range(n)]
        # Early enough to be served, and far enough apart that a refused base's retry (asked at once, without the
        # bio) never meets the second refusal: a base refused twice fails its persona, by design. (Drawn at random
        # within 3-19, both fell on one base in one of three clean-clone runs on 2026-12-04.)
        for i in (3, 17)[:refusals]:
            steps[i] = refusal()
        return steps

    flowise.script(*plan(60))
    openai.script(*plan(120, refusals=2))
    user = make_user(database)
    task_id = submit(database, settings, user, count=6, images=8)
    with caplog.at_level(logging.INFO):
        run_worker(database, local_storage(tmp_path), settings)

    report = task_status(database, task_id)
    assert (report.status, report.personas_done, report.images_done) == ("completed", 6, 48), report.error_log
    assert sum(1 for r in openai.requests if r.path.endswith("/images/edits") or r.path.endswith("generations")) > 18
    # Bounded: at most max_attempts calls per unit of work (1 base + 2 grids + 2 prompts per persona, batches).
    units = 6 * 3 + 2 * 3  # refused units are asked again (at most 3 times)
    assert len(openai.posts()) <= units * 5 and len(flowise.posts()) <= (6 * 2 + 3) * 5
    assert any("retry" in r.getMessage().lower() for r in caplog.records), "no backoff in the logs"
    assert sum("refused" in r.getMessage() for r in caplog.records) == 2, "both refusals were handled"
