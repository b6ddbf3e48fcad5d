"""FastAPI specifics: the lifespan ending while a request awaits a flow, the
dependency, and composing `zag_lifespan` inside an application's own lifespan."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI, Request
from support import eventually

import zag_async as zag
from zag_async.contrib.fastapi import ZagDep, get_zag, zag_lifespan
from zag_async.errors import ConfigurationError
from zag_async.service import ZagService

from . import flows
from .conftest import Urls, load_example, shipping

example = load_example("fastapi_app")


def client_of(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def test_shutdown_while_a_request_awaits_a_flow(urls: Urls) -> None:
    """The request is answered 503 with the flow's status URL; the flow is SUSPENDED
    and resuming it runs only what had not run."""
    app = example.create_app(**urls.options())
    async with client_of(app) as client:
        async with LifespanManager(app):
            service: ZagService = app.state.zag
            request = asyncio.create_task(
                client.post("/orders", json={"item": "book", "ship_delay": 0.3})
            )
            await eventually(lambda: shipping(service), what="the order to ship")
        reply = await request
    assert reply.status_code == 503
    body = reply.json()
    assert body["state"] == "SUSPENDED"
    assert reply.headers["location"] == f"/flows/{body['flow_id']}"
    assert [(a["name"], a["state"]) for a in body["atoms"]] == [
        ("reserve_stock", "SUCCESS"),
        ("charge_card", "SUCCESS"),
        ("ship", "SUCCESS"),
        ("send_receipt", "PENDING"),
    ]
    async with zag.connect(urls.backend) as db:
        results = await zag.resume(body["flow_id"], backend=db)
        detail = await db.load_flow(body["flow_id"])
    assert results["receipt"] == "P-12 TRK-book-1"
    assert {n: a.attempts for n, a in detail.atoms.items()} == {
        "reserve_stock": 1,
        "charge_card": 1,
        "ship": 1,
        "send_receipt": 1,
    }


def composed_app() -> FastAPI:
    """An app whose own lifespan enters zag's, with handlers taking the dependency."""
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        events.append("app up")
        async with zag_lifespan(conductor=True)(app):
            events.append("zag up")
            yield
        events.append("zag down")

    app = FastAPI(lifespan=lifespan)
    app.state.events = events

    @app.get("/whoami")
    async def whoami(service: ZagDep, request: Request) -> dict[str, Any]:
        return {"name": service.name, "same": service is getattr(request.app.state, "zag", None)}

    @app.post("/start")
    async def start(tag: str, service: ZagDep) -> dict[str, Any]:
        return {"flow_id": await service.start(flows.pipeline, store={"tag": tag})}

    @app.get("/flows/{flow_id}")
    async def status(flow_id: str, service: ZagDep) -> dict[str, Any]:
        return (await service.flow_status(flow_id)).to_dict()

    return app


async def test_the_dependency_gives_handlers_the_running_service() -> None:
    app = composed_app()
    async with LifespanManager(app), client_of(app) as client:
        assert app.state.events == ["app up", "zag up"]
        body = (await client.get("/whoami")).json()
        assert body == {"name": app.state.zag.name, "same": True}
        flow_id = (await client.post("/start", params={"tag": "dep"})).json()["flow_id"]

        async def done() -> Any:
            body = (await client.get(f"/flows/{flow_id}")).json()
            return body if body["state"] == "SUCCESS" else None

        assert (await eventually(done))["results"]["c"] == "c-dep"
        service = app.state.zag
    assert app.state.events == ["app up", "zag up", "zag down"]
    assert not hasattr(app.state, "zag")
    assert service.backend.closed


async def test_the_dependency_can_be_overridden() -> None:
    app = composed_app()
    async with ZagService(board=None, name="stand-in") as stand_in:
        app.dependency_overrides[get_zag] = lambda: stand_in
        async with client_of(app) as client:  # no lifespan: the override serves
            assert (await client.get("/whoami")).json()["name"] == "stand-in"


async def test_without_the_lifespan_the_dependency_says_how_to_fix_it() -> None:
    app = composed_app()
    async with client_of(app) as client:
        with pytest.raises(ConfigurationError, match=r"lifespan=zag_lifespan\(\.\.\.\)"):
            await client.get("/whoami")


def test_bad_options_fail_when_the_app_is_built() -> None:
    with pytest.raises(ConfigurationError, match="storage URL"):
        zag_lifespan(backend="flows.db")
