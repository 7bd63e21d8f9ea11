"""The house rules, read from the source with ast (a lazy import inside a function counts too):

- direction: pages -> pipeline -> db; inside pipeline/, each room imports only the rooms below it (``ROOM_ARROWS``);
- no import circle anywhere among Home.py, pages/, pipeline/ and db/;
- no streamlit below pages/; db/ never imports pipeline/; SQL only in db/;
- pages use only the pipeline's public entry points (no db, no storage backend, no provider, no stage);
- a function-level import is a third-party library whose import is deferred for a reason written beside it, never a
  module of this project (that would only hide a circle).

docs/architecture.md draws the same arrows.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROJECT = ("pipeline", "db", "pages", "Home")

# room -> the rooms it may import (besides itself). ``db`` is the database layer, below everything in pipeline/.
ROOM_ARROWS: dict[str, set[str]] = {
    "pipeline.core": {"db"},
    "pipeline.providers": {"pipeline.core"},
    "pipeline.storage": {"pipeline.core"},
    "pipeline.outputs": {"pipeline.core", "pipeline.storage", "db"},
    "pipeline.submit": {"pipeline.core", "pipeline.providers", "pipeline.storage", "db"},
    "pipeline.stages": {"pipeline.core", "pipeline.providers", "pipeline.storage", "db"},
    "pipeline.worker": {"pipeline.core", "pipeline.providers", "pipeline.storage", "pipeline.stages", "db"},
    "pipeline.cli": {"pipeline.core", "pipeline.submit", "pipeline.worker", "pipeline.outputs", "pipeline.storage",
                     "db"},
    "db": set(),
}
PAGE_ENTRY_POINTS = ("pipeline.submit", "pipeline.outputs", "pipeline.worker.runtime", "pipeline.core", "pages")


@dataclass(frozen=True)
class Import:
    target: str  # the module imported (a submodule when ``from package import module`` names one)
    line: int
    nested: bool  # inside a function, class body or ``if`` block, not at the top of the module


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def source_files() -> dict[str, Path]:
    paths = [ROOT / "Home.py", *(p for folder in ("pages", "pipeline", "db") for p in (ROOT / folder).rglob("*.py"))]
    return {module_name(p): p for p in sorted(paths)}


MODULES = source_files()


def resolve(name: str, imported: str | None) -> str:
    """``from pipeline.stages.review import identity`` imports the module ``pipeline.stages.review.identity``."""
    if imported and f"{name}.{imported}" in MODULES:
        return f"{name}.{imported}"
    return name


def imports_of(path: Path) -> list[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [Import(alias.name, node.lineno, id(node) not in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [Import(resolve(node.module, alias.name), node.lineno, id(node) not in top) for alias in node.names]
    return found


def is_project(module: str) -> bool:
    return module.split(".")[0] in PROJECT


GRAPH: dict[str, set[str]] = {
    name: {i.target for i in imports_of(path) if is_project(i.target) and i.target != name}
    for name, path in MODULES.items()
}


def room_of(module: str) -> str | None:
    for room in sorted(ROOM_ARROWS, key=len, reverse=True):
        if module == room or module.startswith(room + "."):
            return room
    return None


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each a circle of imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_circle() -> None:
    assert circles(GRAPH) == []


def test_each_room_imports_only_the_rooms_below_it() -> None:
    offenders = []
    for module, targets in GRAPH.items():
        room = room_of(module)
        if room is None or not module.startswith(("pipeline.", "db")):
            continue
        for target in targets:
            target_room = room_of(target)
            if target_room is not None and target_room != room and target_room not in ROOM_ARROWS[room]:
                offenders.append(f"{module} -> {target}")
    assert sorted(offenders) == []


def test_every_pipeline_module_lives_in_a_room() -> None:
    homeless = [m for m in MODULES if m.startswith("pipeline.") and room_of(m) is None
                and m not in {"pipeline.__main__"}]
    assert homeless == []


def test_pages_use_only_the_public_entry_points() -> None:
    offenders = [
        f"{module} -> {target}"
        for module, targets in GRAPH.items() if module == "Home" or module.startswith("pages")
        for target in targets
        if not (target == "pages" or target.startswith(PAGE_ENTRY_POINTS))
    ]
    assert sorted(offenders) == []


@pytest.mark.parametrize("folder", ["pipeline", "db"])
def test_no_streamlit_below_pages(folder: str) -> None:
    offenders = [
        f"{module}:{i.line}"
        for module, path in MODULES.items() if module.split(".")[0] == folder
        for i in imports_of(path) if i.target.split(".")[0] == "streamlit"
    ]
    assert offenders == []


def test_pages_build_no_sql_and_call_no_network() -> None:
    banned = {"sqlalchemy", "requests", "PIL", "boto3", "psycopg2"}
    offenders = [
        f"{module}:{i.line} {i.target}"
        for module, path in MODULES.items() if module == "Home" or module.startswith("pages")
        for i in imports_of(path) if i.target.split(".")[0] in banned
    ]
    assert offenders == []


def test_pipeline_builds_no_sql() -> None:
    """Every query lives in db/queries: pipeline/ may name SQLAlchemy's exceptions and Session type, no more."""
    allowed = {"sqlalchemy.exc", "sqlalchemy.orm"}
    offenders = [
        f"{module}:{i.line} {i.target}"
        for module, path in MODULES.items() if module.startswith("pipeline")
        for i in imports_of(path) if i.target.split(".")[0] == "sqlalchemy" and i.target not in allowed
    ]
    assert offenders == []


def deferred_imports_without_reason(path: Path) -> Iterable[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    for i in imports_of(path):
        if not i.nested:
            continue
        if is_project(i.target):
            yield f"{i.line}: {i.target} (a module of this project: import it at the top)"
            continue
        first = i.line - 1  # the comment may stand above a run of deferred imports
        while first > 0 and lines[first - 1].strip().startswith(("import ", "from ")):
            first -= 1
        run = lines[max(0, first - 1): i.line]
        if not any("#" in line for line in run):
            yield f"{i.line}: {i.target} (say beside it why the import is deferred)"


def test_function_level_imports_are_deferred_libraries_with_a_reason() -> None:
    offenders = {f"{module}:{why}" for module, path in MODULES.items() for why in deferred_imports_without_reason(path)}
    assert sorted(offenders) == []


def test_the_checks_can_fail(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    import streamlit as st\n    from pipeline.core import errors\n")
    found = imports_of(bad)
    assert {i.target for i in found} == {"streamlit", "pipeline.core.errors"}
    assert all(i.nested for i in found)
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert room_of("pipeline.stages.review.quality") == "pipeline.stages"
    assert list(deferred_imports_without_reason(bad)) != []
