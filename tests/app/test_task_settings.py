"""Per-task settings on New task and their live preview (issue 22, items 2 and 3): a toggle, the identity check
or a bio prompt changed on the form is frozen with that task only; a bad prompt is refused and nothing written;
``?from=TASK_ID`` pre-fills the form ("Re-run with changes" on the Tasks page, which also marks a task's settings
that differ from the global defaults); the image toggles' preview changes with crop, style and seed without any
provider call; Compare shows two tasks' different settings."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
import sqlalchemy as sa
from streamlit.testing.v1 import AppTest

import db.queries as q
from db.models import GenerationTask, User
from pipeline.core.config import Settings
from pipeline.providers import registry
from pipeline.providers.http import HttpClient
from pipeline.providers.offline_images import OfflineImageProvider
from pipeline.providers.offline_personas import OfflinePersonaProvider
from pipeline.submit.image_preview import offline_portrait
from pipeline.submit.settings import read_settings
from pipeline.submit.submission import build_snapshot, submit_task, validate_spec
from tests.app.conftest import AppEnv
from tests.app.test_pages import ADMIN, by_label, joined, page, run
from tests.factories import local_storage, make_settings, run_worker

MEMBER = "member@example.org"
X_PROMPT = "Write a dry, one-line X bio for this persona."
CFG = "nt_cfg_"


def _tasks(env: AppEnv) -> list[GenerationTask]:
    with env.db.session() as session:
        return list(session.scalars(sa.select(GenerationTask).order_by(GenerationTask.id)))


def _submit(env: AppEnv, user: User, own: Mapping[str, object], **request: Any) -> str:
    settings = make_settings(env.db_url, env.tmp)
    spec = validate_spec(user_id=user.id, description=request.get("description", "retired fishermen in Porto"),
                         language=request.get("language", "Portuguese"), count=request.get("count", 2),
                         images_per_persona=request.get("images", 4), seed=request.get("seed", 11),
                         targets=request.get("targets"))
    return submit_task(env.db, spec, build_snapshot(env.db, settings, own))


def _fill(at: AppTest, description: str = "urban cyclists in Lisbon") -> None:
    at.text_area(key="nt_description").input(description)
    at.number_input(key="nt_count").set_value(2)
    at.selectbox(key="nt_images").set_value(4)


# --------------------------------------------------------------------------- the form's settings, frozen


def test_settings_changed_on_the_form_are_frozen_with_that_task_only(app_env: AppEnv) -> None:
    app_env.admin(ADMIN)
    member = app_env.member(MEMBER)  # not an administrator: the global settings are not theirs, a task's are
    before = read_settings(app_env.db)
    at = run(page("new", MEMBER))
    assert at.toggle(key=CFG + "crop_white_borders").value is before.toggles["crop_white_borders"] is False
    assert at.text_area(key=CFG + "bio_prompt_x").value == before.bio_prompts["bio_prompt_x"]
    _fill(at)
    at.toggle(key=CFG + "crop_white_borders").set_value(True)
    at.toggle(key=CFG + "randomize_image_style").set_value(True)
    at.radio(key=CFG + "identity_check").set_value("on")
    at.text_area(key=CFG + "bio_prompt_x").input(X_PROMPT)
    run(at)
    assert "crop white borders" in joined(at.caption)  # listed as set for this task
    by_label(at.button, "Submit task").click()
    run(at)
    assert not at.error, joined(at.error)
    [task] = _tasks(app_env)
    assert task.user_id == member.id
    snapshot = task.config_snapshot
    assert snapshot["toggles"] == {**before.toggles, "crop_white_borders": True, "randomize_image_style": True}
    assert snapshot["identity"]["mode"] == "on" and snapshot["identity"]["enabled"] is True
    assert snapshot["bio_prompts"] == {**before.bio_prompts, "bio_prompt_x": X_PROMPT}
    assert snapshot["set_for_task"] == ["crop_white_borders", "randomize_image_style", "identity_check",
                                        "bio_prompt_x"]
    assert read_settings(app_env.db) == before  # nobody else's task changes
    assert app_env.count("audit_log") == 2  # the two accounts' creation only: no setting was written


def test_unchanged_settings_freeze_the_global_defaults(app_env: AppEnv) -> None:
    app_env.admin(ADMIN)
    at = run(page("new", ADMIN))
    _fill(at)
    by_label(at.button, "Submit task").click()
    run(at)
    [task] = _tasks(app_env)
    current = read_settings(app_env.db)
    assert task.config_snapshot["toggles"] == current.toggles
    assert task.config_snapshot["bio_prompts"] == current.bio_prompts
    assert task.config_snapshot["set_for_task"] == []


@pytest.mark.parametrize(("text", "message"), [("x" * 20_001, "limited to 20000"), ("   ", "cannot be empty")],
                         ids=["over the limit", "blank"])
def test_a_bad_prompt_is_refused_and_nothing_is_written(app_env: AppEnv, text: str, message: str) -> None:
    app_env.admin(ADMIN)
    at = run(page("new", ADMIN))
    _fill(at)
    at.toggle(key=CFG + "crop_white_borders").set_value(True)
    at.text_area(key=CFG + "bio_prompt_tiktok").input(text)
    by_label(at.button, "Submit task").click()
    run(at)
    shown = joined(at.error).replace("\\", "")
    assert "bio_prompt_tiktok" in shown and message in shown, shown
    assert not at.success
    assert app_env.count("generation_tasks") == 0


def test_the_persona_preview_uses_the_forms_prompts(app_env: AppEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    app_env.admin(ADMIN)
    seen: list[dict[str, str]] = []
    generate = OfflinePersonaProvider.generate

    def spy(self: OfflinePersonaProvider, request: Any) -> Any:
        seen.append(dict(request.bio_prompts))
        return generate(self, request)

    monkeypatch.setattr(OfflinePersonaProvider, "generate", spy)
    at = run(page("new", ADMIN))
    _fill(at)
    at.text_area(key=CFG + "bio_prompt_x").input(X_PROMPT)
    by_label(at.button, "Preview (no images, nothing stored)").click()
    run(at)
    assert seen and seen[-1]["bio_prompt_x"] == X_PROMPT


# --------------------------------------------------------------------------- ?from=TASK_ID


def test_from_a_task_prefills_the_form_and_submits_a_new_task(app_env: AppEnv) -> None:
    app_env.admin(ADMIN)
    member = app_env.member(MEMBER)
    targets = {"gender": {"f": 0.5, "m": 0.5}}
    source = _submit(app_env, member, {"randomize_image_style": True, "bio_prompt_x": X_PROMPT},
                     description="night-shift nurses in Leeds", language="English", count=5, images=8, seed=1234,
                     targets=targets)
    at = run(page("new", MEMBER, **{"from": source}))
    assert source in joined(at.info).replace("\\", "")
    assert at.text_area(key="nt_description").value == "night-shift nurses in Leeds"
    assert at.selectbox(key="nt_language").value == "English"
    assert at.number_input(key="nt_count").value == 5
    assert at.selectbox(key="nt_images").value == 8
    assert at.text_input(key="nt_seed").value == "1234"
    assert at.toggle(key=CFG + "randomize_image_style").value is True
    assert at.text_area(key=CFG + "bio_prompt_x").value == X_PROMPT
    # one change, then a new task: the rest is the source's
    at.toggle(key=CFG + "crop_white_borders").set_value(True)
    run(at)
    assert at.text_area(key="nt_description").value == "night-shift nurses in Leeds"  # not pre-filled again
    by_label(at.button, "Submit task").click()
    run(at)
    assert not at.error, joined(at.error)
    first, second = _tasks(app_env)
    assert first.task_id == source and second.task_id != source
    assert (second.persona_description, second.number_to_generate, second.images_per_persona, second.seed) == (
        "night-shift nurses in Leeds", 5, 8, 1234)
    assert second.targets == first.targets
    assert second.config_snapshot["toggles"] == {**first.config_snapshot["toggles"], "crop_white_borders": True}
    assert second.config_snapshot["bio_prompts"]["bio_prompt_x"] == X_PROMPT


def test_from_another_users_task_is_refused_unless_an_administrator(app_env: AppEnv) -> None:
    app_env.admin(ADMIN)
    owner = app_env.member(MEMBER)
    app_env.member("other@example.org")
    source = _submit(app_env, owner, {"crop_white_borders": True}, description="beekeepers in Ghent")
    at = run(page("new", "other@example.org", **{"from": source}))
    assert "no task" in joined(at.error)
    assert at.text_area(key="nt_description").value == ""
    at = run(page("new", ADMIN, **{"from": source}))
    assert not at.error
    assert at.text_area(key="nt_description").value == "beekeepers in Ghent"
    assert at.toggle(key=CFG + "crop_white_borders").value is True


# --------------------------------------------------------------------------- the Tasks page


def test_tasks_page_marks_settings_set_for_a_task_and_re_runs_with_changes(app_env: AppEnv) -> None:
    app_env.admin(ADMIN)
    member = app_env.member(MEMBER)
    task_id = _submit(app_env, member, {"crop_white_borders": True, "bio_prompt_x": X_PROMPT},
                      description="beekeepers in Ghent")
    at = run(page("tasks", MEMBER))
    shown = joined(at.markdown).replace("\\", "")
    assert "Crop white borders: on (global default: off)" in shown, shown
    assert "Bio prompt x (differs from the global default): " + X_PROMPT in shown
    assert "Randomize image style: off\n" in shown + "\n"  # listed, not marked: it is the default
    assert "Randomize image style: off (global default" not in shown
    assert any("2 differ from the global defaults" in e.label for e in at.expander)
    by_label(at.button, "Re-run with changes").click()
    run(at)  # New task, pre-filled from the task
    assert at.text_area(key="nt_description").value == "beekeepers in Ghent"
    assert at.toggle(key=CFG + "crop_white_borders").value is True
    assert task_id in joined(at.info).replace("\\", "")


def test_re_run_keeps_the_tasks_own_settings(app_env: AppEnv) -> None:
    app_env.admin(ADMIN)
    member = app_env.member(MEMBER)
    source = _submit(app_env, member, {"randomize_image_style": True, "identity_check": "off",
                                       "bio_prompt_tiktok": X_PROMPT})
    at = run(page("tasks", MEMBER))
    by_label(at.button, "Re-run").click()
    run(at)
    first, second = _tasks(app_env)
    assert first.task_id == source and second.rerun_of == source
    for key in ("toggles", "bio_prompts", "identity", "set_for_task"):
        assert second.config_snapshot[key] == first.config_snapshot[key], key
    assert second.config_snapshot["toggles"]["randomize_image_style"] is True


# --------------------------------------------------------------------------- the toggles' live preview


def _forbid_provider_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []

    def refuse(name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            raise AssertionError(f"the preview called a provider: {name}")
        return call

    monkeypatch.setattr(registry.ProviderCache, "get", refuse("ProviderCache.get"))
    monkeypatch.setattr(HttpClient, "request", refuse("HttpClient.request"))
    for method in ("generate_base", "edit_face", "make_grid"):
        monkeypatch.setattr(OfflineImageProvider, method, refuse(f"OfflineImageProvider.{method}"))
    monkeypatch.setattr(OfflinePersonaProvider, "generate", refuse("OfflinePersonaProvider.generate"))
    return calls


def _preview_images(at: AppTest) -> tuple[str, str, str]:
    """The preview's before and after images (their media URLs name a hash of their bytes) and the caption."""
    images = at.get("image")
    assert len(images) == 2, [i.value for i in images]
    before, after = (image.value[0] for image in images)
    return before, after, images[1].captions[0]


def test_the_preview_follows_crop_style_and_seed_without_any_provider_call(
    app_env: AppEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    app_env.admin(ADMIN)
    calls = _forbid_provider_calls(monkeypatch)
    at = run(page("new", ADMIN))
    plain_before, plain_after, caption = _preview_images(at)
    assert "trim only" in caption
    assert "offline portrait" in joined(at.caption)

    at.toggle(key=CFG + "crop_white_borders").set_value(True)
    run(at)
    crop_before, crop_after, caption = _preview_images(at)
    assert crop_before == plain_before and crop_after != plain_after
    assert "border crop" in caption

    at.toggle(key=CFG + "randomize_image_style").set_value(True)
    run(at)
    _, styled, caption = _preview_images(at)
    assert styled not in (plain_after, crop_after)
    assert "border crop + style" in caption

    at.text_input(key="nt_seed").input("987654")
    run(at)
    _, reseeded, _ = _preview_images(at)
    assert reseeded != styled  # another seed, another look

    at.toggle(key=CFG + "randomize_image_style").set_value(False)
    run(at)
    assert _preview_images(at)[1] == crop_after  # the same inputs, the same image
    assert calls == []


def test_the_preview_uses_the_last_base_image_of_the_users_own_tasks(
    app_env: AppEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = app_env.admin(ADMIN)
    settings: Settings = make_settings(app_env.db_url, app_env.tmp)
    _submit(app_env, admin, {})
    run_worker(app_env.db, local_storage(app_env.tmp), settings)
    with app_env.db.session() as session:
        [latest, *_] = q.latest_base_images(session, admin.id)
    calls = _forbid_provider_calls(monkeypatch)
    at = run(page("new", ADMIN))
    assert "the last base image of your tasks" in joined(at.caption)
    with_photo = _preview_images(at)[0]
    app_env.member(MEMBER)  # a user without tasks gets the offline portrait
    other = run(page("new", MEMBER))
    assert "offline portrait" in joined(other.caption)
    assert _preview_images(other)[0] != with_photo
    assert latest and calls == []
    assert offline_portrait()  # drawn locally


# --------------------------------------------------------------------------- Compare


def test_compare_shows_two_tasks_own_settings_side_by_side(app_env: AppEnv) -> None:
    admin = app_env.admin(ADMIN)
    settings = make_settings(app_env.db_url, app_env.tmp)
    plain = _submit(app_env, admin, {})
    styled = _submit(app_env, admin, {"randomize_image_style": True, "crop_white_borders": True})
    run_worker(app_env.db, local_storage(app_env.tmp), settings)
    at = page("gallery", ADMIN, tasks=f"{plain},{styled}")
    at.session_state["g_tab"] = "Compare"
    run(at)
    assert any(m.value == "**Configuration differences**" for m in at.markdown)
    frames = [d.value for d in at.dataframe]
    frame = next(f for f in frames if "toggles.randomize_image_style" in list(f.index))
    assert "toggles.crop_white_borders" in list(frame.index)
    assert frame.loc["toggles.randomize_image_style", plain] == "False"
    assert frame.loc["toggles.randomize_image_style", styled] == "True"
    assert read_settings(app_env.db).toggles["randomize_image_style"] is False  # nobody else's tasks changed
