"""No secrets in the repository: every tracked or new file is scanned for key-shaped strings."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Built from pieces so this file does not match itself.
PATTERNS = {
    "AWS access key": re.compile("AKIA" + r"[0-9A-Z]{16}"),
    "OpenAI-style key": re.compile("sk-" + r"(?:proj-)?[A-Za-z0-9_-]{32,}"),
    "private key": re.compile("-----BEGIN " + r"(?:RSA |EC |OPENSSH |DSA )?PRIVATE KEY-----"),
    "GitHub token": re.compile("gh" + r"[pousr]_[A-Za-z0-9]{36}"),
    "Slack token": re.compile("xox" + r"[abpr]-[A-Za-z0-9-]{10,}"),
    "hard-coded bearer": re.compile("Bearer " + r"[A-Za-z0-9._-]{24,}"),
}
SKIP_SUFFIXES = {".png", ".jpg", ".jpeg", ".parquet", ".zip", ".db", ".ico"}


def repository_files() -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True
    )
    if out.returncode != 0:
        pytest.skip("not a git checkout")
    return [ROOT / line for line in out.stdout.splitlines() if line and (ROOT / line).is_file()]


def scan(paths: list[Path]) -> list[str]:
    hits = []
    for path in paths:
        if path.suffix.lower() in SKIP_SUFFIXES:
            continue
        text = path.read_text(encoding="utf-8", errors="ignore")
        for name, pattern in PATTERNS.items():
            if pattern.search(text):
                hits.append(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: {name}")
    return hits


def test_repository_has_no_secrets() -> None:
    files = repository_files()
    assert len(files) > 20
    assert scan(files) == []


def test_scanner_finds_a_planted_key(tmp_path: Path) -> None:
    planted = tmp_path / "config.py"
    planted.write_text('KEY = "' + "sk-" + "a1B2" * 12 + '"\n')
    assert scan([planted]) and "OpenAI-style key" in scan([planted])[0]
