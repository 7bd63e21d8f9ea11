"""The CLI's submit on input that crashed it (issue 20, item 8): exit 2, one error line, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.test_cli import GOOD, cli, cli_env, count_rows

__all__ = ["cli_env"]  # the fixture, imported for the tests below

BAD_TARGETS = [
    ("null", "null", "must be a JSON object"),
    ("a list", "[1]", "must be a JSON object"),
    ("a share of 10**400", '{"gender": {"f": 1%s, "m": 1}}' % ("0" * 400), "up to 1,000,000,000"),
    ("a share of 1e400", '{"ethnicity": {"White": 1e400}}', "up to 1,000,000,000"),
    ("a 5,000-digit share", '{"gender": {"f": %s}}' % ("9" * 5000), "number is too long"),
    ("very deep JSON", "[" * 9000 + "]" * 9000, "nested too deeply"),
    ("over-long", " " * 20_001 + "{}", "the limit is 20,000"),
]


@pytest.mark.parametrize(("case", "text", "message"), BAD_TARGETS, ids=[c[0] for c in BAD_TARGETS])
def test_bad_targets_file_exits_2_and_writes_nothing(
    cli_env: dict[str, str], capsys: pytest.CaptureFixture[str], tmp_path: Path, case: str, text: str, message: str
) -> None:
    assert cli("create-user", "ana@example.org", "--password", "a long password") == 0
    targets = tmp_path / "targets.json"
    targets.write_text(text, encoding="utf-8")
    capsys.readouterr()
    assert cli("submit", *GOOD, "--targets", str(targets)) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert out == "" and len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], err
    assert count_rows(cli_env["DATABASE_URL"], "generation_tasks") == 0


@pytest.mark.parametrize("seed", ["9" * 5000, "²", "--1"], ids=["5000-digits", "superscript", "double-minus"])
def test_a_seed_int_cannot_read_exits_2(cli_env: dict[str, str], capsys: pytest.CaptureFixture[str], seed: str) -> None:
    assert cli("create-user", "ana@example.org", "--password", "a long password") == 0
    capsys.readouterr()
    assert cli("submit", *GOOD, f"--seed={seed}") == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "whole number" in lines[0], lines
    assert count_rows(cli_env["DATABASE_URL"], "generation_tasks") == 0
