"""aiohttp specifics: the service closes after aiohttp let running requests finish
(or cancelled them past its shutdown_timeout), and the typed application key."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from support import eventually

import zag_async as zag
from zag_async.contrib.aiohttp import ZAG_KEY, get_zag, zag_context
from zag_async.errors import ConfigurationError

from .conftest import Urls, load_example, shipping

example = load_example("aiohttp_app")


async def test_shutdown_lets_a_request_finish_its_flow_first(urls: Urls) -> None:
    app = example.create_app(**urls.options())
    async with TestClient(TestServer(app)) as client:
        request = asyncio.create_task(
            client.post("/orders", json={"item": "book", "ship_delay": 0.3})
        )
        service = get_zag(app)
        await eventually(lambda: shipping(service), what="the order to ship")
        await client.server.close()  # aiohttp waits for the handler, then runs cleanup_ctx
        reply = await request
        assert reply.status == 200
        body = await reply.json()
    assert body["state"] == "SUCCESS" and body["results"]["receipt"] == "P-12 TRK-book-1"
    assert service.backend.closed


async def test_a_request_past_aiohttps_shutdown_timeout_leaves_its_flow_suspended(
    urls: Urls,
) -> None:
    app = example.create_app(**urls.options())
    server = TestServer(app)
    await server.start_server(shutdown_timeout=0.2)  # (TestServer() drops runner options)
    client = TestClient(server)
    await client.start_server()
    request = asyncio.create_task(client.post("/orders", json={"item": "book", "ship_delay": 30}))
    service = get_zag(app)
    await eventually(lambda: shipping(service), what="the order to ship")
    [flow_id] = service.running_flows
    await server.close()  # the handler is cancelled after 0.2 s
    await client.close()
    request.cancel()
    await asyncio.gather(request, return_exceptions=True)

    async with zag.connect(urls.backend) as db:
        detail = await db.load_flow(flow_id)
        assert detail.state == "SUSPENDED"
        assert detail.atoms["ship"].state == "RUNNING"  # cancelled: it runs again
        results = await zag.resume(flow_id, backend=db, store={"ship_delay": 0.0})
        detail = await db.load_flow(flow_id)
    assert results["receipt"] == "P-12 TRK-book-1"
    assert {n: a.attempts for n, a in detail.atoms.items()} == {
        "reserve_stock": 1,
        "charge_card": 1,
        "ship": 2,
        "send_receipt": 1,
    }


async def test_the_service_is_found_from_the_app_and_the_request() -> None:
    async def whoami(request: web.Request) -> web.Response:
        service = get_zag(request)
        same = service is get_zag(request.app) is request.app[ZAG_KEY]
        return web.json_response({"name": service.name, "same": same})

    app = web.Application()
    app.cleanup_ctx.append(zag_context(name="aio"))
    app.router.add_get("/whoami", whoami)
    async with TestClient(TestServer(app)) as client:
        body: dict[str, Any] = await (await client.get("/whoami")).json()
        assert body == {"name": "aio", "same": True}
        service = app[ZAG_KEY]
    assert service.backend.closed


def test_without_the_context_get_zag_says_how_to_fix_it() -> None:
    with pytest.raises(ConfigurationError, match=r"cleanup_ctx.append\(zag_context"):
        get_zag(web.Application())


def test_bad_options_fail_when_the_app_is_built() -> None:
    with pytest.raises(ConfigurationError, match="job board URL"):
        zag_context(board="localhost:2181")
