"""The command-line contract (DESIGN §6): exit codes, one-line errors, nothing written on bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from pipeline.cli import main
from pipeline.core.config import reset_settings_cache
from tests.factories import cli_in_process, offline_env, on_databases

ROOT = Path(__file__).resolve().parents[2]
GOOD = ["--user", "ana@example.org", "--description", "urban cyclists in Lisbon", "--language", "Portuguese",
        "--count", "3", "--images", "4"]


@pytest.fixture
def cli_env(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    env = offline_env(db_url, tmp_path, LEASE_SECONDS="4")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)  # no stray .env from the repository
    reset_settings_cache()
    yield env
    reset_settings_cache()


def cli(*argv: str) -> int:
    reset_settings_cache()
    return main(list(argv))


def count_rows(url: str, table: str) -> int:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())
    finally:
        engine.dispose()


BAD_SUBMITS = [
    ("empty description", {"--description": ""}, "description is empty"),
    ("blank description", {"--description": "   \n\t "}, "description is empty"),
    ("control chars only", {"--description": "\x00\x01\x02"}, "description is empty"),
    ("oversized description", {"--description": "x" * 4001}, "limit is 4000"),
    ("unknown language", {"--language": "Klingon"}, "unknown language"),
    ("count zero", {"--count": "0"}, "between 1 and 1000"),
    ("count too big", {"--count": "1001"}, "between 1 and 1000"),
    ("count negative", {"--count": "-5"}, "between 1 and 1000"),
    ("count not a number", {"--count": "ten"}, "whole number"),
    ("count float", {"--count": "2.5"}, "whole number"),
    ("images 5", {"--images": "5"}, "one of 4, 8, 12, 16, 20"),
    ("images 0", {"--images": "0"}, "one of 4, 8, 12, 16, 20"),
    ("images text", {"--images": "many"}, "whole number"),
    ("negative seed", {"--seed": "-1"}, "seed must be between"),
    ("huge seed", {"--seed": str(2**64)}, "seed must be between"),
    ("seed text", {"--seed": "abc"}, "whole number"),
    ("unknown user", {"--user": "nobody@example.org"}, "no active user"),
    ("sql in user", {"--user": "' OR 1=1 --"}, "no active user"),
]


# Refused while the request is checked, before anything is written: on SQLite; the user look-ups on both databases.
@pytest.mark.parametrize(("db_url", "case", "change", "message"),
                         on_databases(BAD_SUBMITS, both={"unknown user", "sql in user"}), indirect=["db_url"])
def test_bad_submit_exits_2_and_writes_nothing(
    cli_env: dict[str, str], capsys: pytest.CaptureFixture[str], case: str, change: dict[str, str], message: str
) -> None:
    assert cli("create-user", "ana@example.org", "--password", "a long password") == 0
    before = count_rows(cli_env["DATABASE_URL"], "generation_tasks")
    args = list(GOOD)
    for flag, value in change.items():
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    capsys.readouterr()
    assert cli("submit", *args) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert message in lines[0]
    assert count_rows(cli_env["DATABASE_URL"], "generation_tasks") == before


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["settings", "set", "max_concurrent_tasks", "-1"], "between 1 and"),
        (["settings", "set", "max_concurrent_tasks", "two"], "whole number"),
        (["settings", "set", "crop_white_borders", "maybe"], "not a boolean"),
        (["settings", "set", "bio_prompt_x", "   "], "cannot be empty"),
        (["settings", "set", "bio_prompt_x", "p" * 20001], "limited to"),
        (["settings", "set", "no_such_key", "1"], "unknown setting"),
        (["settings", "get", "no_such_key"], "unknown setting"),
        (["create-user", "not-an-email", "--password", "long enough pw"], "not a valid e-mail"),
        (["create-user", "bob@example.org", "--password", "short"], "at least 8"),
        (["status", "doesnotexist"], "no task"),
        (["cancel", "doesnotexist"], "no task"),
        (["export", "doesnotexist", "--format", "xml", "--out", "x"], "invalid choice"),
        (["submit", "--user", "a@b.org"], "required"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_other_bad_input(cli_env: dict[str, str], capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    assert cli("migrate") == 0
    before = {t: count_rows(cli_env["DATABASE_URL"], t) for t in ("settings", "config", "users", "audit_log")}
    values_before = cli_settings_snapshot(cli_env["DATABASE_URL"])
    capsys.readouterr()
    assert cli(*argv) == 2
    _, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], err
    assert {t: count_rows(cli_env["DATABASE_URL"], t) for t in before} == before
    assert cli_settings_snapshot(cli_env["DATABASE_URL"]) == values_before


def cli_settings_snapshot(url: str) -> list[tuple[str, str]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT key, value FROM settings UNION ALL SELECT key, "
                                        "CAST(value AS VARCHAR(10)) FROM config ORDER BY 1")).all()
            return [(str(k), str(v)) for k, v in rows]
    finally:
        engine.dispose()


def test_settings_roundtrip_and_audit(cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("settings", "set", "max_concurrent_tasks", "3") == 0
    assert cli("settings", "set", "crop_white_borders", "on") == 0
    capsys.readouterr()
    assert cli("settings", "get", "max_concurrent_tasks") == 0
    assert cli("settings", "get", "crop_white_borders") == 0
    assert capsys.readouterr().out.split() == ["3", "true"]
    assert count_rows(cli_env["DATABASE_URL"], "audit_log") == 2


def run_cli(env: dict[str, str], *argv: str, stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *argv],
        cwd=ROOT, env={**os.environ, **env}, input=stdin, capture_output=True, text=True, timeout=timeout,
    )


def test_full_journey_through_processes(cli_env: dict[str, str], tmp_path: Path) -> None:
    assert run_cli(cli_env, "create-user", "ana@example.org", "--admin", stdin="a long password\n").returncode == 0
    done = run_cli(cli_env, "submit", *GOOD, "--seed", "5")
    assert done.returncode == 0, done.stderr
    task_id = done.stdout.strip()
    assert len(task_id) == 12 and done.stdout.count("\n") == 1
    worked = run_cli(cli_env, "work", "--until-idle", "--worker-id", "cli-worker")
    assert worked.returncode == 0, worked.stderr
    status = run_cli(cli_env, "status", task_id, "--json")
    report = json.loads(status.stdout)
    for key in ("task_id", "status", "number_to_generate", "images_per_persona", "personas_done", "images_done",
                "personas_failed", "error_log"):
        assert key in report
    assert (report["status"], report["personas_done"], report["images_done"]) == ("completed", 3, 12)
    bad = run_cli(cli_env, "submit", *GOOD[:-1], "5")
    assert bad.returncode == 2 and bad.stderr.startswith("error:") and bad.stdout == ""
    deleted = run_cli(cli_env, "delete", task_id)
    assert deleted.returncode == 0, deleted.stderr
    assert run_cli(cli_env, "status", task_id).returncode == 2


def _status(env: dict[str, str], task_id: str) -> dict[str, object]:
    result = cli_in_process(env, "status", task_id, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_sigkilled_worker_is_resumed_without_duplicates(cli_env: dict[str, str], tmp_path: Path) -> None:
    # Only the worker that is killed and the one that resumes need to be processes.
    assert cli_in_process(cli_env, "create-user", "ana@example.org", "--password", "a long password").returncode == 0
    args = list(GOOD)
    args[args.index("--count") + 1] = "20"
    args[args.index("--images") + 1] = "20"
    task_id = cli_in_process(cli_env, "submit", *args).stdout.strip()
    workers_env = {**cli_env, "LEASE_SECONDS": "2"}  # the rescuer waits out the victim's lease: a short one
    worker = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "work", "--worker-id", "victim"],
        cwd=ROOT, env={**os.environ, **workers_env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    engine = sa.create_engine(cli_env["DATABASE_URL"])
    try:
        deadline = time.time() + 90
        bases: dict[tuple[int, int], str] = {}
        while time.time() < deadline:
            with engine.connect() as conn:
                images = conn.execute(sa.text("SELECT coalesce(sum(image_count), 0) FROM generation_results")).scalar_one()
                if images >= 40:
                    break
            time.sleep(0.05)
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
        with engine.connect() as conn:
            for batch, slot, base in conn.execute(sa.text(
                "SELECT batch_number, slot, base_image_url FROM generation_results WHERE base_image_url IS NOT NULL"
            )):
                bases[(batch, slot)] = base
            images_at_kill = conn.execute(sa.text("SELECT sum(image_count) FROM generation_results")).scalar_one()
        assert 0 < int(images_at_kill) < 400, "the kill did not land mid-task"
        media = tmp_path / "media"
        base_bytes = {k: (media / v).read_bytes() for k, v in bases.items()}

        resumed = run_cli(workers_env, "work", "--until-idle", "--worker-id", "rescuer")
        assert resumed.returncode == 0, resumed.stderr
        report = _status(cli_env, task_id)
        assert (report["status"], report["personas_done"], report["images_done"]) == ("completed", 20, 400)
        with engine.connect() as conn:
            rows = conn.execute(sa.text(
                "SELECT batch_number, slot, firstname, lastname, base_image_url, images FROM generation_results"
            )).all()
        assert len(rows) == 20
        assert len({(r.batch_number, r.slot) for r in rows}) == 20
        assert len({(r.firstname, r.lastname) for r in rows}) == 20
        for r in rows:  # a stored base is reused, never regenerated
            if (r.batch_number, r.slot) in bases:
                assert r.base_image_url == bases[(r.batch_number, r.slot)]
                assert (media / r.base_image_url).read_bytes() == base_bytes[(r.batch_number, r.slot)]
            images = r.images if isinstance(r.images, list) else json.loads(r.images)
            assert len(images) == 20 == len(set(images))
        files = {p.relative_to(media).as_posix() for p in media.rglob("*") if p.is_file() and ".partial" not in p.parts}
        assert len(files) == 20 + 400 * 2  # bases + images + thumbnails, nothing orphaned
    finally:
        if worker.poll() is None:
            worker.kill()
        engine.dispose()


def test_targets_are_met_exactly_and_reported(cli_env: dict[str, str], tmp_path: Path) -> None:
    assert cli_in_process(cli_env, "create-user", "ana@example.org", "--password", "a long password").returncode == 0
    bad = tmp_path / "bad.json"
    bad.write_text('{"gender": {"f": 1, "nb": 1}}')
    args = list(GOOD)
    args[args.index("--count") + 1] = "10"
    result = cli_in_process(cli_env, "submit", *args, "--targets", str(bad))
    assert result.returncode == 2 and result.stderr.startswith("error:") and "nb" in result.stderr
    assert count_rows(cli_env["DATABASE_URL"], "generation_tasks") == 0
    good = tmp_path / "targets.json"
    good.write_text(json.dumps({"gender": {"f": 0.6, "m": 0.4}, "age": {"bands": [
        {"min": 18, "max": 29, "share": 1}, {"min": 60, "max": 75, "share": 1}]}}))
    task_id = cli_in_process(cli_env, "submit", *args, "--targets", str(good)).stdout.strip()
    assert cli_in_process(cli_env, "work", "--until-idle").returncode == 0
    report = _status(cli_env, task_id)
    achieved = {r["category"]: r["achieved"] for r in report["targets_report"]["gender"]["rows"]}  # type: ignore[index]
    assert achieved == {"f": 6, "m": 4}
    bands = {r["category"]: r["achieved"] for r in report["targets_report"]["age"]["rows"]}  # type: ignore[index]
    assert bands == {"18-29": 5, "60-75": 5}


def current_revision_of(url: str) -> str:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return str(conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one())
    finally:
        engine.dispose()


def test_a_downgrade_that_drops_data_says_what_and_asks_for_yes(
    cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    url = cli_env["DATABASE_URL"]
    seed, older = "fbc78f685fa2", "7e69fd85074a"  # the original's last revision, and the one before it
    assert cli("create-user", "ana@example.org", "--password", "a long password", "--admin") == 0
    assert cli("submit", *GOOD) == 0
    head = current_revision_of(url)
    capsys.readouterr()

    assert cli("migrate", "--revision", seed) == 2  # our columns hold data: refused, nothing changed
    err = capsys.readouterr().err
    assert err.startswith("error: downgrading to fbc78f685fa2 drops stored data:") and "--yes" in err, err
    assert "column generation_tasks.config_snapshot (1 value)" in err and "column users.role (1 value)" in err, err
    assert current_revision_of(url) == head
    assert count_rows(url, "generation_tasks") == 1

    assert cli("migrate", "--revision", seed, "--yes") == 0
    assert "dropped: " in capsys.readouterr().out
    assert current_revision_of(url) == seed
    assert count_rows(url, "generation_tasks") == 1  # the seed's own columns keep their rows

    assert cli("migrate", "--revision", older) == 0  # drops only empty columns (no personas): no --yes needed
    assert current_revision_of(url) == older
    assert cli("migrate", "--revision", "no-such-revision") == 2
    assert "unknown revision" in capsys.readouterr().err
    assert cli("migrate") == 0
    assert current_revision_of(url) == head
