"""Issue 14 item 6: the example apps answer with conventional status codes over real
HTTP (httpx through ASGI for FastAPI, aiohttp's test server): 200 for an order that
ran, 409 for one reverted on a business rule, 404 for unknown ids, 422 for malformed
input; never a 500 for any of these."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from aiohttp.test_utils import TestClient, TestServer
from asgi_lifespan import LifespanManager

from zag_async.contrib.http import FLOW_HTTP_STATUS, http_status
from zag_async.states import FlowState
from zag_async.status import FlowStatus

from .conftest import load_example

#: (method, path, raw body) -> status code
Send = Callable[[str, str, bytes | None], Awaitable[int]]
UNKNOWN = "0f6c1ee6-1f5c-4b4c-9d0f-3a1e2b7c9d10"


@contextlib.asynccontextmanager
async def serve(framework: str, tmp_path: Path) -> AsyncIterator[Send]:
    app = load_example(f"{framework}_app").create_app(
        backend=f"sqlite+aiosqlite:///{tmp_path / 'orders.db'}"
    )
    headers = {"content-type": "application/json"}
    if framework == "fastapi":
        async with (
            LifespanManager(app, startup_timeout=20, shutdown_timeout=20) as manager,
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=manager.app), base_url="http://t"
            ) as http,
        ):

            async def send(method: str, path: str, body: bytes | None) -> int:
                return (await http.request(method, path, content=body, headers=headers)).status_code

            yield send
        return
    async with TestClient(TestServer(app)) as client:

        async def send_aiohttp(method: str, path: str, body: bytes | None) -> int:
            async with client.request(method, path, data=body, headers=headers) as reply:
                return reply.status

        yield send_aiohttp


@pytest.mark.parametrize("framework", ["fastapi", "aiohttp"])
async def test_each_answer_has_its_conventional_code(framework: str, tmp_path: Path) -> None:
    async with serve(framework, tmp_path) as send:
        assert await send("POST", "/orders", b'{"item": "book"}') == 200
        assert await send("POST", "/orders", b'{"item": "piano"}') == 409  # reverted: out of stock
        for unknown in (UNKNOWN, "not-a-uuid"):
            assert await send("GET", f"/flows/{unknown}", None) == 404, unknown
            assert await send("GET", f"/jobs/{unknown}", None) == 404, unknown
        malformed = [
            b"{not json",
            b"[]",
            b'"book"',
            b"{}",
            b'{"item": 3}',
            b'{"item": "a", "qty": "x"}',
        ]
        for body in malformed:
            assert await send("POST", "/orders", body) == 422, body
            assert await send("POST", "/orders/async", body) == 422, body


def test_every_flow_state_has_an_http_status() -> None:
    assert set(FLOW_HTTP_STATUS) == set(FlowState)
    assert http_status(FlowStatus("f", "order", FlowState.SUCCESS)) == 200
    assert http_status(FlowStatus("f", "order", FlowState.REVERTED)) == 409
    assert http_status(FlowStatus("f", "order", FlowState.WAITING)) == 202
    assert http_status(FlowStatus("f", "order", FlowState.SUSPENDED)) == 503
    failed = [
        s
        for s in FlowState
        if http_status(FlowStatus("f", "o", s)) >= 500
        and s not in (FlowState.SUSPENDED, FlowState.SUSPENDING)
    ]
    assert set(failed) == {FlowState.FAILURE, FlowState.UNCOMPENSATED, FlowState.STUCK_PAST_PIVOT}
