"""Issue 14 item 7: every Python block of the README runs as written.

A block followed by an "Output:" text block is run here as a script (in a fresh
directory, so its database files land there) and must print exactly that. Any other
block must be named in ELSEWHERE, with the test that runs it as written (web apps
need a server, the jobs snippet a `myapp` package), or in EXCERPTS, with the complete
program it is cut from: each of its lines must be in that program. A new block that
is none of these fails here.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")

#: a line only in the block -> the test that runs that block as written
ELSEWHERE: dict[str, str] = {
    "zag.Conductor(board": "tests/test_readme.py::test_jobs_snippet_runs",
    "from zag_async.contrib.fastapi import ZagDep, zag_lifespan": (
        "tests/contrib/test_readme_web.py::test_fastapi_snippet"
    ),
    "from zag_async.contrib.aiohttp import get_zag, zag_context": (
        "tests/contrib/test_readme_web.py::test_aiohttp_snippet"
    ),
    "signal_router": "tests/contrib/test_readme_waiting.py::test_the_approval_example_runs",
    "from zag_async.contrib.ui import asgi_app": (
        "tests/ui/test_readme_ui.py::test_the_mount_snippet"
    ),
}
#: a line only in the block -> the complete program it is an excerpt of
EXCERPTS: dict[str, str] = {"irreversible=True)": "examples/compensation.py"}
#: a line only in the block -> what the block needs (a service fixture of tests/conftest.py)
NEEDS: dict[str, str] = {"zag.RemoteExecutor(": "amqp_url"}


@dataclass(frozen=True)
class Block:
    line: int  #: where the block starts in README.md
    code: str
    output: str | None  #: the "Output:" text block right after it, if any

    def __str__(self) -> str:
        return f"README.md:{self.line}"


def python_blocks() -> list[Block]:
    blocks = []
    for match in re.finditer(r"```python\n(.*?)```\n", README, re.S):
        shown = re.match(r"\nOutput:\n\n```text\n(.*?)```", README[match.end() :], re.S)
        line = README.count("\n", 0, match.start()) + 1
        blocks.append(Block(line, match.group(1), shown.group(1) if shown else None))
    return blocks


BLOCKS = python_blocks()
RUN = [b for b in BLOCKS if b.output is not None]


def named(block: Block, table: dict[str, str]) -> str | None:
    hits = [value for marker, value in table.items() if marker in block.code]
    assert len(hits) <= 1, f"{block}: more than one entry matches"
    return hits[0] if hits else None


def test_every_block_is_run_or_an_excerpt() -> None:
    assert len(BLOCKS) >= 11  # the collector still finds them
    loose = [
        str(b)
        for b in BLOCKS
        if b.output is None and not named(b, ELSEWHERE) and not named(b, EXCERPTS)
    ]
    assert not loose, f"blocks with no output shown, no test and no program: {loose}"
    assert not [str(b) for b in RUN if named(b, ELSEWHERE) or named(b, EXCERPTS)]
    for marker in [*ELSEWHERE, *EXCERPTS, *NEEDS]:
        assert any(marker in b.code for b in BLOCKS), f"no block has {marker!r} any more"


@pytest.mark.parametrize("test_id", sorted(set(ELSEWHERE.values())))
def test_the_named_test_exists(test_id: str) -> None:
    path, name = test_id.split("::")
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
    functions = (ast.FunctionDef, ast.AsyncFunctionDef)
    assert name in {n.name for n in ast.walk(tree) if isinstance(n, functions)}, test_id


@pytest.mark.parametrize("block", [b for b in BLOCKS if named(b, EXCERPTS)], ids=str)
def test_an_excerpt_is_cut_from_its_program(block: Block) -> None:
    program = named(block, EXCERPTS)
    assert program is not None
    lines = {line.strip() for line in (ROOT / program).read_text(encoding="utf-8").splitlines()}
    for line in block.code.splitlines():
        line = line.strip().removesuffix(" ...")
        assert not line or line in lines, f"{block}: not in {program}: {line!r}"


def runnable(block: Block) -> Any:
    """A block as a parameter, marked `services` when it needs a server (the fast
    suite leaves it out)."""
    marks = [pytest.mark.services] if named(block, NEEDS) else []
    return pytest.param(block, id=str(block), marks=marks)


@pytest.mark.parametrize("block", [runnable(b) for b in RUN])
def test_the_block_prints_its_output(
    block: Block, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    code, expected = block.code, block.output
    need = named(block, NEEDS)
    if need is not None:
        request.getfixturevalue(need)  # fails (under CI) or skips without the service
        # the only change: a topic of its own, as workers of other tests share the broker
        code = code.replace('"compute"', f'"readme-{uuid.uuid4().hex[:8]}"')
    if "port=9464" in code:  # any free port: tests run side by side
        code = code.replace("port=9464", "port=0")
    script = tmp_path / "block.py"
    script.write_text(code, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ran = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    printed = re.sub(r"127\.0\.0\.1:\d+/metrics", "127.0.0.1:9464/metrics", ran.stdout)
    assert printed == expected
