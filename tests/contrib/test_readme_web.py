"""The README's "In a web service" snippets run as shown (FastAPI and aiohttp) and
answer with conventional codes over real HTTP: 200, 409 for an order reverted on a
business rule, 404 for unknown ids, 422 for malformed input (issue 14 item 6)."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp.test_utils import TestClient, TestServer
from asgi_lifespan import LifespanManager
from support import eventually

from .conftest import ROOT

README = (ROOT / "README.md").read_text()
SECTION = README.split("## In a web service (FastAPI, aiohttp)", 1)[1].split("\n## ", 1)[0]
BLOCKS = re.findall(r"```python\n(.*?)```", SECTION, re.S)

FLOWS = """
import zag_async as zag

@zag.task(provides="receipt")
async def sell(item: str) -> str:
    if item == "piano":
        raise LookupError("no piano in stock")  # a business rule: the order is reverted
    return f"sold {item}"

def order() -> zag.Flow:
    return zag.linear("order", sell)
"""


@pytest.fixture
def myapp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A `myapp.flows:order` factory to import, and tmp_path as the working directory
    (the snippets keep their database in ./orders.db)."""
    package = tmp_path / "myapp"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "flows.py").write_text(FLOWS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    yield
    for name in ("myapp.flows", "myapp"):
        sys.modules.pop(name, None)


def snippet(marker: str) -> Any:
    """Run the README block containing `marker`; returns its `app`."""
    [code] = [block for block in BLOCKS if marker in block]
    namespace: dict[str, Any] = {"__name__": "readme_snippet"}
    exec(compile(code, "README.md", "exec"), namespace)
    return namespace["app"]


def test_the_section_sits_before_semantics() -> None:
    assert README.index("## In a web service") < README.index("## Semantics worth knowing")
    assert len(BLOCKS) == 2
    assert all(" zag: " not in block for block in BLOCKS)  # no parameter shadows the alias


async def test_fastapi_snippet(myapp: None, tmp_path: Path) -> None:
    app = snippet("zag_lifespan")
    async with (
        LifespanManager(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        reply = await client.post("/orders", params={"item": "book"})
        assert reply.status_code == 200
        assert reply.json()["results"]["receipt"] == "sold book"
        reverted = await client.post("/orders", params={"item": "piano"})
        assert reverted.status_code == 409 and reverted.json()["state"] == "REVERTED"
        assert (await client.post("/orders")).status_code == 422  # no item
        assert (await client.get("/jobs/0f6c1ee6-1f5c-4b4c-9d0f-3a1e2b7c9d10")).status_code == 404
        assert (await client.get("/jobs/nonsense")).status_code == 404
        reply = await client.post("/orders/async", params={"item": "lamp"})
        assert reply.status_code == 202
        location = reply.headers["location"]

        async def complete() -> Any:
            body = (await client.get(location)).json()
            return body if body["state"] == "COMPLETE" else None

        body = await eventually(complete, what="the job to complete")
        assert body["flow"]["results"]["receipt"] == "sold lamp"
    assert (tmp_path / "orders.db").exists()


async def test_aiohttp_snippet(myapp: None) -> None:
    app = snippet("zag_context")
    async with TestClient(TestServer(app)) as client:
        reply = await client.post("/orders", params={"item": "book"})
        assert reply.status == 200
        body = await reply.json()
        assert body["results"]["receipt"] == "sold book"
        assert (await client.get(f"/flows/{body['flow_id']}")).status == 200
        reverted = await client.post("/orders", params={"item": "piano"})
        assert reverted.status == 409 and (await reverted.json())["state"] == "REVERTED"
        assert (await client.post("/orders")).status == 422
        assert (await client.get("/flows/0f6c1ee6-1f5c-4b4c-9d0f-3a1e2b7c9d10")).status == 404
        assert (await client.get("/flows/nonsense")).status == 404
