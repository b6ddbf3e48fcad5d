"""What a fresh process imports: start-up must not pay for what it does not use.

`import zag_async` resolves its public names on first use, and running a flow
loads the engine and nothing of the job boards, workers, service or web glue,
nor any optional driver. These tests pin that with `sys.modules` in a fresh
interpreter (never a timing; benchmarks/startup.py has the figures), so an
eager import slipped into `__init__.py` or onto the engine's path fails here.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Optional or heavy third-party packages: none is needed to import zag_async or run a flow.
HEAVY = (
    "aio_pika",
    "aiohttp",
    "aiosqlite",
    "aiozk",
    "anyio",
    "asyncpg",
    "click",
    "fastapi",
    "networkx",
    "opentelemetry",
    "prometheus_client",
    "pydantic",
    "rich",
    "sqlalchemy",
)
# Parts of zag_async a flow run on its own never needs.
NOT_FOR_A_FLOW = (
    "zag_async.cli",
    "zag_async.contrib",
    "zag_async.inspection",
    "zag_async.jobs",
    "zag_async.metrics",
    "zag_async.pictures",
    "zag_async.service",
    "zag_async.status",
    "zag_async.telemetry",
    "zag_async.workers",
)

FLOW = """
import asyncio, sys
import zag_async as zag

@zag.task(provides="a")
async def one() -> int:
    return 1

@zag.task(provides="b")
async def two(a: int) -> int:
    return a + 1

@zag.task(provides="c")
async def three(a: int, b: int) -> int:
    return a + b

async def main(url: str) -> None:
    flow = zag.linear("first", one, zag.graph("rest", three, two))
    async with zag.connect(url) as backend:
        results = await zag.run(flow, backend=backend)
    assert results["c"] == 3, results

asyncio.run(main(sys.argv[1]))
"""


def loaded_after(code: str, *argv: str) -> set[str]:
    """The modules in `sys.modules` once `code` has run in a fresh interpreter."""
    script = code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    proc = subprocess.run(
        [sys.executable, "-c", script, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return set(json.loads(proc.stdout.strip().splitlines()[-1]))


def under(modules: set[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in prefixes))


def test_import_loads_only_the_package_itself() -> None:
    loaded = loaded_after("import zag_async")
    assert under(loaded, ("zag_async",)) == ["zag_async"]
    assert under(loaded, HEAVY) == []
    assert "asyncio" not in loaded


def test_a_name_loads_only_what_it_needs() -> None:
    loaded = loaded_after("from zag_async import FlowState, ZagError")
    assert under(loaded, ("zag_async",)) == ["zag_async", "zag_async.errors", "zag_async.states"]


def test_first_flow_in_memory_loads_no_extras() -> None:
    loaded = loaded_after(FLOW, "memory://")
    assert under(loaded, HEAVY) == []
    assert under(loaded, NOT_FOR_A_FLOW) == []


@pytest.mark.skipif(
    importlib.util.find_spec("zag_async.persistence.sqlite") is None,
    reason="the sqlite3 backend (zag_async/persistence/sqlite.py) is not in this tree",
)
def test_first_flow_on_a_current_sqlite_file_loads_no_sqlalchemy(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'flows.db'}"
    loaded_after(FLOW, url)  # creates the file and its schema
    loaded = loaded_after(FLOW, url)
    assert under(loaded, HEAVY) == []
    assert under(loaded, NOT_FOR_A_FLOW) == []


def test_the_codec_loads_decimal_only_for_a_decimal() -> None:
    code = """
import sys
from zag_async.codec import JsonCodec
codec = JsonCodec()
assert codec.loads(codec.dumps({"n": 1})) == {"n": 1}
assert "decimal" not in sys.modules
value = codec.loads('{"$zag": "decimal", "v": "1.50"}')
assert type(value).__name__ == "Decimal" and str(value) == "1.50", value
assert codec.dumps(value) == '{"$zag":"decimal","v":"1.50"}'
"""
    assert "decimal" in loaded_after(code)


def test_submodules_once_loaded_by_import_are_still_attributes() -> None:
    code = """
import zag_async as zag
assert callable(zag.status.read_flow_status)
assert zag.engine.Engine is zag.Engine
try:
    zag.no_such_module
except AttributeError:
    pass
else:
    raise AssertionError("zag.no_such_module")
"""
    assert "zag_async.status" in loaded_after(code)


def test_the_command_line_loads_rich_only_to_draw() -> None:
    loaded = loaded_after("import zag_async.cli")
    assert "click" in loaded
    assert under(loaded, ("rich",)) == []
