"""The docs follow the code: every setting, CLI command, export format and provider is in the README, and
docs/architecture.md names every room of ``pipeline/`` (as simonw/llm's and datasette's ``test_docs.py``).

The names are read from the code itself (the ``Settings`` class, the CLI's parser, the provider registries, the
package folders), never from a hand-kept list, so a new one without docs fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipeline.cli import build_parser
from pipeline.core.config import Settings
from pipeline.providers.registry import IMAGE_PROVIDERS, PERSONA_PROVIDERS

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
ARCHITECTURE = ROOT / "docs" / "architecture.md"


def section(text: str, heading: str) -> str:
    """The body of the ``## heading`` section of a markdown text (up to the next ``## ``)."""
    match = re.search(rf"^## {re.escape(heading)}\b.*?$(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    assert match, f"no '## {heading}' section"
    return match.group(1)


def environment_variables() -> list[str]:
    """The variable each ``Settings`` field is read from: its alias if it has one, else its upper-cased name."""
    names = []
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias if isinstance(field.validation_alias, str) else field.alias
        names.append((alias or name).upper())
    return sorted(names)


def cli_commands() -> list[str]:
    """The top-level commands, read from the parser's own usage line (``{migrate,create-user,…}``)."""
    usage = build_parser().format_usage()
    match = re.search(r"\{([^}]*)\}", usage)
    assert match, usage
    return sorted(match.group(1).split(","))


def export_formats(capsys: pytest.CaptureFixture[str]) -> list[str]:
    """The ``export --format`` choices, read from the error the parser gives for a format it does not know."""
    with pytest.raises(SystemExit):
        build_parser().parse_args(["export", "x", "--format", "no-such-format", "--out", "y"])
    message = capsys.readouterr().err
    match = re.search(r"choose from (.*)\)", message)
    assert match, message
    return re.findall(r"'([^']+)'", match.group(1))


def readme() -> str:
    return README.read_text(encoding="utf-8")


def test_the_names_are_read_from_the_code() -> None:
    # Guards the readers above: a parser or settings change that made them return nothing would pass vacuously.
    assert {"DATABASE_URL", "STORAGE_URL", "PERSONA_PROVIDER", "WORKER_IN_APP"} <= set(environment_variables())
    assert {"migrate", "submit", "work", "status", "export", "check-providers"} <= set(cli_commands())
    assert "offline" in PERSONA_PROVIDERS and "offline" in IMAGE_PROVIDERS


@pytest.mark.parametrize("variable", environment_variables())
def test_every_setting_is_in_the_configuration_section(variable: str) -> None:
    assert f"`{variable}`" in section(readme(), "Configuration"), f"{variable} is not documented in the README"


def test_the_configuration_table_lists_no_variable_that_is_gone() -> None:
    known = set(environment_variables())
    rows = [line for line in section(readme(), "Configuration").splitlines() if line.startswith("| `")]
    assert rows, "the configuration table is empty"
    listed = {name for row in rows for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", row.split("|")[1])}
    assert sorted(listed - known) == []


@pytest.mark.parametrize("command", cli_commands())
def test_every_cli_command_is_in_the_command_line_section(command: str) -> None:
    assert f"`{command}" in section(readme(), "Command line"), f"CLI command {command!r} is not in the README"


def test_every_export_format_is_in_the_readme(capsys: pytest.CaptureFixture[str]) -> None:
    formats = export_formats(capsys)
    assert {"csv", "zip", "hf"} <= set(formats)
    text = section(readme(), "Command line")
    assert [f for f in formats if not re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", text)] == []


@pytest.mark.parametrize("name", sorted({*PERSONA_PROVIDERS, *IMAGE_PROVIDERS}))
def test_every_provider_is_in_the_readme(name: str) -> None:
    assert f"`{name}`" in readme(), f"provider {name!r} is not in the README"


def test_the_two_commands_and_the_linked_docs_exist() -> None:
    text = readme()
    for command in ("bash scripts/app.sh", "bash scripts/test.sh"):
        assert command in text
        assert (ROOT / command.split()[1]).is_file()
    links = re.findall(r"\]\((docs/[^)#]+)", text)
    assert {"docs/architecture.md", "docs/performance.md"} <= set(links)
    assert [link for link in links if not (ROOT / link).is_file()] == []


def pipeline_packages() -> list[str]:
    """Every sub-package of ``pipeline/``, as a path relative to it (``core``, ``stages/images``, …)."""
    base = ROOT / "pipeline"
    return sorted(str(p.parent.relative_to(base)) for p in base.rglob("__init__.py") if p.parent != base)


def test_there_are_rooms_to_check() -> None:
    assert {"core", "providers", "storage", "submit", "worker", "stages", "outputs"} <= set(pipeline_packages())


@pytest.mark.parametrize("package", pipeline_packages())
def test_the_architecture_doc_names_every_room(package: str) -> None:
    assert f"{package}/" in ARCHITECTURE.read_text(encoding="utf-8"), f"docs/architecture.md does not name {package}/"
