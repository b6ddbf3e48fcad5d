"""The README's "Operations UI" section as shown: the FastAPI mount snippet (pages
under /zag, actions for the host's auth only, CSRF required) and the `zag-async ui`
command (run from the directory holding orders.db)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from support import eventually

import zag_async as zag
from zag_async.persistence import connect
from zag_async.states import FlowState

from . import flows
from .test_cli import served

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
SECTION = README.split("## Operations UI\n", 1)[1].split("\n## ", 1)[0]
[BLOCK] = re.findall(r"```python\n(.*?)```", SECTION, re.S)
[COMMAND] = re.findall(r"`(zag-async ui [^`]+)`", SECTION)


@pytest.fixture
async def orders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """./orders.db (the snippet's database) holding one flow waiting for approval."""
    monkeypatch.chdir(tmp_path)
    async with connect(f"sqlite+aiosqlite:///{tmp_path / 'orders.db'}") as backend:
        engine = zag.Engine.from_factory(flows.approval, backend=backend)
        await engine.run()
    return engine.flow_id


def snippet() -> Any:
    namespace: dict[str, Any] = {"__name__": "readme_ui_snippet"}
    exec(compile(BLOCK, "README.md", "exec"), namespace)
    return namespace["app"]


async def test_the_mount_snippet(orders: str, tmp_path: Path) -> None:
    app = snippet()
    staff = {"x-staff-key": "let-me-in"}
    transport = httpx.ASGITransport(app=app)
    async with (
        LifespanManager(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as http,
    ):
        listing = await http.get("/zag/flows")
        assert listing.status_code == 200 and orders in listing.text
        anonymous = await http.post(f"/zag/flows/{orders}/signal", data={"event": "approval"})
        assert anonymous.status_code == 401
        forged = await http.post(
            f"/zag/flows/{orders}/signal", data={"event": "approval"}, headers=staff
        )
        assert forged.status_code == 403
        page = await http.get(f"/zag/flows/{orders}", headers=staff)
        found = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert found is not None
        sent = await http.post(
            f"/zag/flows/{orders}/signal",
            data={"event": "approval", "payload": '"ok"', "csrf": found.group(1)},
            headers=staff,
        )
        assert sent.status_code == 303

        async def done() -> bool:
            reply = await http.get(f"/zag/flows/{orders}/atoms.json")
            return bool(reply.json()["state"] == FlowState.SUCCESS)

        await eventually(done, what="the signalled flow finished")


@pytest.mark.services  # a server process
async def test_the_ui_command_as_shown(orders: str, tmp_path: Path) -> None:
    args = shlex.split(COMMAND)
    assert args[:2] == ["zag-async", "ui"]
    async with served(*args[1:]) as (_http, listing):  # any free port: tests run side by side
        assert listing.status_code == 200 and orders in listing.text
