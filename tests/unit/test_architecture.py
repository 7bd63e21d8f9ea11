"""The rule of direction: pages -> pipeline -> db. pipeline/ and db/ never import streamlit; db/ never imports
pipeline/; pages never build SQL. Parsed with ast, so a lazy import inside a function is caught too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def python_files(folder: str) -> list[Path]:
    files = sorted((ROOT / folder).rglob("*.py"))
    assert files, f"no python files under {folder}/"
    return files


@pytest.mark.parametrize("folder", ["pipeline", "db"])
def test_no_streamlit_below_pages(folder: str) -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(m for m in imported_modules(path) if m.split(".")[0] == "streamlit")
        for path in python_files(folder)
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_db_does_not_import_pipeline() -> None:
    offenders = [
        str(p.relative_to(ROOT)) for p in python_files("db") if any(m.split(".")[0] == "pipeline" for m in imported_modules(p))
    ]
    assert offenders == []


def test_pages_build_no_sql() -> None:
    pages = [ROOT / "Home.py", *sorted((ROOT / "pages").glob("*.py"))]
    offenders = []
    for path in pages:
        if not path.exists():
            continue
        mods = imported_modules(path)
        if any(m.split(".")[0] in {"sqlalchemy", "requests", "PIL", "boto3", "psycopg2"} for m in mods):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_pipeline_builds_no_sql() -> None:
    """Every query lives in db/queries: pipeline/ may name SQLAlchemy's exceptions and Session type, no more."""
    allowed = {"sqlalchemy.exc", "sqlalchemy.orm"}
    offenders = {
        str(path.relative_to(ROOT)): sorted(m for m in imported_modules(path)
                                            if m.split(".")[0] == "sqlalchemy" and m not in allowed)
        for path in python_files("pipeline")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_check_can_fail(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    import streamlit as st\n    from streamlit.testing import v1\n")
    assert {"streamlit", "streamlit.testing"} <= imported_modules(bad)
