"""Issue 14 item 7, the package around the docs: what the examples import comes with
the extras, SQLite with the core install, and the project says what it is, under
which license, what changed and where it lives."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def requirement_names(requirements: list[str]) -> set[str]:
    """Distribution names (normalised) of requirement strings, extras of our own expanded."""
    extras = PROJECT["optional-dependencies"]
    names: set[str] = set()
    for requirement in requirements:
        name = re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0]
        if name == PROJECT["name"]:
            own = re.search(r"\[(.*)\]", requirement)
            for extra in own.group(1).split(",") if own else ():
                names |= requirement_names(extras[extra.strip()])
        else:
            names.add(re.sub(r"[-_.]+", "-", name).lower())
    return names


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_the_all_extra_brings_what_every_example_imports() -> None:
    installed = requirement_names(PROJECT["dependencies"] + ["zag-async[all]"])
    distributions = packages_distributions()
    missing = {}
    examples = sorted((ROOT / "examples").glob("*.py"))
    own = {"zag_async", "__future__"} | {e.stem for e in examples}
    for example in examples:
        for module in imported_modules(example):
            if module in sys.stdlib_module_names or module in own:
                continue
            names = {re.sub(r"[-_.]+", "-", d).lower() for d in distributions.get(module, [])}
            if not names & installed:
                missing[f"{example.name}: {module}"] = sorted(names)
    assert not missing, f"imported by an example, in no extra of [all]: {missing}"


def test_each_web_extra_brings_its_example() -> None:
    assert {"fastapi", "pydantic", "httpx", "asgi-lifespan", "uvicorn"} <= requirement_names(
        ["zag-async[fastapi]"]
    )
    assert "aiohttp" in requirement_names(["zag-async[aiohttp]"])
    # the API alone records nothing: the extra must bring an SDK that shows spans
    assert "opentelemetry-sdk" in requirement_names(["zag-async[otel]"])


def test_sqlite_installs_with_the_core_package() -> None:
    core = requirement_names(PROJECT["dependencies"])
    assert {"aiosqlite", "sqlalchemy"} <= core


def test_the_project_says_what_it_is_and_where_it_lives() -> None:
    assert len(PROJECT["description"]) > 80
    assert PROJECT["readme"] == "README.md"
    assert PROJECT["license"] == {"text": "Apache-2.0"}
    assert {"Homepage", "Source", "Changelog", "Documentation"} <= set(PROJECT["urls"])
    license_text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text


def test_the_changelog_keeps_a_changelog() -> None:
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert text.startswith("# Changelog")
    assert "keepachangelog.com" in text and "## [Unreleased]" in text
    for issue in (2, 3, 4, 5, 6, 10, 11, 12, 13, 14):  # 1, 7, 8, 9 were never filed
        assert f"(issue {issue})" in text, issue
