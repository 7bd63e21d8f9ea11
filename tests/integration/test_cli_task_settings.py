"""A task's own settings from the CLI (issue 22, item 2): ``submit --set KEY=VALUE`` (repeatable) and ``--config
FILE.json`` are frozen with the task, run by the worker and written in the export's manifest; bad input exits 2
with one error line and writes nothing."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

import db.queries as q
from db.session import Database
from pipeline.submit.settings import read_settings
from tests.factories import on_databases
from tests.integration.test_cli import GOOD, cli, cli_env, count_rows

__all__ = ["cli_env"]  # the fixture, imported for the tests below

X_PROMPT = "Write a dry, one-line X bio for this persona."


def _task(url: str, task_id: str) -> dict[str, object]:
    db = Database(url)
    try:
        with db.session() as session:
            task = q.get_task(session, task_id)
            assert task is not None
            results = q.list_results(session, task.id)
            styles = [image.get("style") for r in results for image in (r.image_meta or {}).get("images", [])]
            return {"snapshot": task.config_snapshot, "styles": styles}
    finally:
        db.dispose()


def test_set_and_config_are_frozen_run_and_exported(
    cli_env: dict[str, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert cli("create-user", "ana@example.org", "--password", "a long password") == 0
    config = tmp_path / "task.json"
    config.write_text(json.dumps({"identity_check": "on", "bio_prompt_x": X_PROMPT, "randomize_image_style": False}),
                      encoding="utf-8")
    capsys.readouterr()
    code = cli("submit", *GOOD, "--config", str(config), "--set", "randomize_image_style=true",
               "--set", "crop_white_borders=yes")
    out, err = capsys.readouterr()
    assert code == 0, err
    task_id = out.strip()
    snapshot = _task(cli_env["DATABASE_URL"], task_id)["snapshot"]
    assert isinstance(snapshot, dict)
    assert snapshot["toggles"]["randomize_image_style"] is True  # --set over --config
    assert snapshot["toggles"]["crop_white_borders"] is True
    assert snapshot["identity"]["mode"] == "on" and snapshot["identity"]["enabled"] is True
    assert snapshot["bio_prompts"]["bio_prompt_x"] == X_PROMPT
    assert snapshot["set_for_task"] == ["crop_white_borders", "randomize_image_style", "identity_check",
                                        "bio_prompt_x"]
    # the global defaults are untouched: another task gets them
    db = Database(cli_env["DATABASE_URL"])
    try:
        defaults = read_settings(db)
    finally:
        db.dispose()
    assert defaults.toggles["randomize_image_style"] is False and defaults.identity_check == "auto"
    assert defaults.bio_prompts["bio_prompt_x"] != X_PROMPT

    assert cli("work", "--until-idle") == 0
    styles = _task(cli_env["DATABASE_URL"], task_id)["styles"]
    assert styles and all(isinstance(style, dict) and style.get("preset") for style in styles), styles

    out_zip = tmp_path / "export.zip"
    assert cli("export", task_id, "--format", "zip", "--out", str(out_zip)) == 0
    with zipfile.ZipFile(out_zip) as archive:
        manifest = json.loads(archive.read("manifest.json"))
    exported = manifest["tasks"][0]["config_snapshot"]
    assert exported["toggles"]["randomize_image_style"] is True
    assert exported["bio_prompts"]["bio_prompt_x"] == X_PROMPT
    assert exported["set_for_task"] == snapshot["set_for_task"]


def test_without_settings_the_task_takes_the_global_defaults(
    cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli("create-user", "ana@example.org", "--password", "a long password") == 0
    assert cli("settings", "set", "crop_white_borders", "true") == 0
    capsys.readouterr()
    assert cli("submit", *GOOD) == 0
    snapshot = _task(cli_env["DATABASE_URL"], capsys.readouterr().out.strip())["snapshot"]
    assert isinstance(snapshot, dict)
    assert snapshot["toggles"]["crop_white_borders"] is True and snapshot["set_for_task"] == []


BAD = [
    ("unknown key", ["--set", "colour=blue"], None, "unknown task setting 'colour'"),
    ("a global-only key", ["--set", "max_concurrent_tasks=4"], None, "unknown task setting"),
    ("no equals sign", ["--set", "crop_white_borders"], None, "--set takes KEY=VALUE"),
    ("a toggle not a boolean", ["--set", "crop_white_borders=maybe"], None, "is not a boolean"),
    ("a bad identity mode", ["--set", "identity_check=sometimes"], None, "identity_check must be one of"),
    ("an empty prompt", ["--set", "bio_prompt_x=   "], None, "cannot be empty"),
    ("a prompt over the limit", ["--set", "bio_prompt_x=" + "x" * 20_001], None, "limited to 20000"),
    ("config a list", [], "[1, 2]", "must hold a JSON object"),
    ("config null", [], "null", "must hold a JSON object"),
    ("config not JSON", [], "{", "is not valid JSON"),
    ("config very deep", [], "[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ("config unknown key", [], '{"style": true}', "unknown task setting 'style'"),
    ("config a prompt over the limit", [], json.dumps({"bio_prompt_tiktok": "y" * 20_001}), "limited to 20000"),
    ("config a number for a toggle", [], '{"crop_white_borders": 1}', "must be true or false"),
    ("config a list for a prompt", [], '{"bio_prompt_x": ["a"]}', "must be text"),
    ("a good config, a bad --set", ["--set", "nope=1"], '{"crop_white_borders": true}', "unknown task setting"),
]


# Refused while the settings are read, before anything is written: on SQLite; one case on both databases.
@pytest.mark.parametrize(("db_url", "case", "sets", "config", "message"),
                         on_databases(BAD, both={"a good config, a bad --set"}), indirect=["db_url"])
def test_bad_settings_exit_2_and_write_nothing(
    cli_env: dict[str, str], capsys: pytest.CaptureFixture[str], tmp_path: Path, case: str, sets: list[str],
    config: str | None, message: str,
) -> None:
    assert cli("create-user", "ana@example.org", "--password", "a long password") == 0
    argv = list(sets)
    if config is not None:
        path = tmp_path / "task.json"
        path.write_text(config, encoding="utf-8")
        argv += ["--config", str(path)]
    capsys.readouterr()
    assert cli("submit", *GOOD, *argv) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert out == "" and len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], (case, err)
    assert count_rows(cli_env["DATABASE_URL"], "generation_tasks") == 0


def test_a_missing_config_file_exits_2(cli_env: dict[str, str], capsys: pytest.CaptureFixture[str],
                                        tmp_path: Path) -> None:
    assert cli("create-user", "ana@example.org", "--password", "a long password") == 0
    capsys.readouterr()
    assert cli("submit", *GOOD, "--config", str(tmp_path / "missing.json")) == 2
    assert "cannot read --config" in capsys.readouterr().err
    assert count_rows(cli_env["DATABASE_URL"], "generation_tasks") == 0
