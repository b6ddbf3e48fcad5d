"""The README's "Waiting for people and time" opens with an approval example (tasks,
flow and signal route) of about 15 lines that runs as shown: an expense is started,
waits, and is paid once the route delivers the approval."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from support import eventually

from .conftest import ROOT

README = (ROOT / "README.md").read_text()
SECTION = README.split("## Waiting for people and time", 1)[1].split("\n## ", 1)[0]
BLOCKS = re.findall(r"```python\n(.*?)```", SECTION, re.S)
MODULE = "readme_expenses"


@pytest.fixture
def snippet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The first block as an importable module (its factory is rebuilt by name), with
    tmp_path as the working directory (it keeps its database in ./app.db)."""
    (tmp_path / f"{MODULE}.py").write_text(BLOCKS[0])
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    yield importlib.import_module(MODULE)
    sys.modules.pop(MODULE, None)


def test_the_section_opens_with_the_route_example() -> None:
    first = BLOCKS[0]
    assert "signal_router" in first and "zag.wait_for(" in first
    code = [line for line in first.splitlines() if line.strip()]
    assert len(code) <= 18, f"{len(code)} lines: the issue promises about 15"


async def test_the_approval_example_runs(snippet: Any, capsys: pytest.CaptureFixture[str]) -> None:
    app = snippet.app
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url="http://t") as c,
    ):
        reply = await c.post("/expenses", params={"amount": 42})
        assert reply.status_code == 202
        flow_id = reply.json()["flow_id"]
        service = app.state.zag

        async def waiting() -> Any:
            status = await service.flow_status(flow_id)
            return status if status.state == "WAITING" else None

        status = await eventually(waiting, what="the expense to wait for its approval")
        assert [(w.atom, w.event) for w in status.waiting_for] == [("approve", "approval")]
        reply = await c.post(f"/flows/{flow_id}/signals/approval", json={"by": "ann"})
        assert reply.status_code == 202, reply.text

        async def done() -> Any:
            status = await service.flow_status(flow_id)
            return status if status.done else None

        assert (await eventually(done, what="the expense to be paid")).state == "SUCCESS"
    assert "paid E-1 approved by ann" in capsys.readouterr().out


def test_the_run_time_wait_example_runs_as_shown(tmp_path: Path) -> None:
    """The block on deciding at run time whether to wait prints its Output block."""
    (block,) = [b for b in BLOCKS if "start_payment" in b]
    shown = SECTION.split(block, 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    script = tmp_path / "pay.py"
    script.write_text(block)
    ran = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == shown
