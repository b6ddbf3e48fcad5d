"""The entry points themselves: help, version, import hygiene, db upgrade, the cwd on the path.

(`python -m zag_async demo` is run by tests/test_readme.py.)
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from .conftest import ROOT, cli_env, ok, zag_many

COMMANDS = ["conductor", "db", "demo", "flows", "graph", "jobs", "run", "signal", "ui", "worker"]


def test_help_lists_every_command(entry: str) -> None:
    out = ok("--help", entry=entry).out
    assert out.startswith("Usage: zag-async ")
    listed = [line.split()[0] for line in out.split("Commands:")[1].splitlines() if line.strip()]
    assert listed == COMMANDS


def test_every_command_has_help() -> None:
    paths = [("run",), ("jobs", "post"), ("flows", "show"), ("graph",), ("conductor",)]
    results = zag_many(*((*path, "--help") for path in paths))
    for path, result in zip(paths, results, strict=True):
        assert result.code == 0, result.err
        assert result.out.startswith(f"Usage: zag-async {' '.join(path)} "), result.out
    assert "read as JSON when it" in results[0].out  # how --store values are read


def test_version() -> None:
    assert ok("--version", entry="script").out.strip() == "zag-async, version 0.1.0"


def test_import_zag_async_loads_neither_click_nor_rich() -> None:
    code = "import sys, zag_async; print(sorted({'click', 'rich'} & set(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(), check=True
    )
    assert out.stdout.strip() == "[]"


def test_db_upgrade(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'f.db'}"
    assert re.fullmatch(r"schema at version \d+\n", ok("db", "upgrade", url).out)
    assert (tmp_path / "f.db").exists()


def test_the_current_directory_is_importable(tmp_path: Path) -> None:
    (tmp_path / "here_flows.py").write_text(
        "import zag_async as zag\n\n"
        "@zag.task(provides='x')\n"
        "async def one() -> int:\n"
        "    return 1\n\n"
        "def flow() -> zag.Flow:\n"
        "    return zag.linear('here', one)\n"
    )
    env = cli_env(PYTHONPATH=str(ROOT))  # cli_flows not needed; the cwd must be enough
    out = ok("run", "here_flows:flow", entry="script", cwd=tmp_path, env=env).out
    assert 'results: {"x": 1}' in out
