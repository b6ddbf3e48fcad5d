"""Fixtures for the operations UI tests: a SQLite backend in tmp_path holding
real flows (one waiting for a signal, one succeeded, one failed with markup in
its names), and `client(**asgi_app options)`: an httpx client on the UI app
mounted under /zag in a Starlette host, through the ASGI transport."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

import zag_async as zag
from zag_async.contrib.ui import asgi_app
from zag_async.errors import NotFound
from zag_async.persistence import connect
from zag_async.persistence.base import Backend
from zag_async.states import FlowState

from . import flows


@dataclass
class Stored:
    backend: Backend
    waiting: str
    done: str
    failed: str


@pytest.fixture
async def stored(tmp_path: Path) -> AsyncIterator[Stored]:
    async with connect(f"sqlite+aiosqlite:///{tmp_path / 'flows.db'}") as backend:
        waiting = zag.Engine.from_factory(flows.approval, backend=backend)
        await waiting.run()
        flows.gate_for("done").set()
        done = zag.Engine.from_factory(flows.held, store={"tag": "done"}, backend=backend)
        await done.run()
        failed = zag.Engine.from_factory(flows.nasty, backend=backend)
        with pytest.raises(Exception):  # noqa: B017 (the flow fails on purpose)
            await failed.run()
        yield Stored(backend, waiting.flow_id, done.flow_id, failed.flow_id)
    flows.GATE.clear()


Client = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def client(stored: Stored) -> Client:
    @asynccontextmanager
    async def open_client(**options: Any) -> AsyncIterator[httpx.AsyncClient]:
        ui = asgi_app(stored.backend, **options)
        host = Starlette(routes=[Mount("/zag", ui)])
        transport = httpx.ASGITransport(app=host)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://ui.test") as http:
                yield http
        finally:
            await ui.state.ui.aclose()  # what its lifespan does: end the resumes it started

    return open_client


@asynccontextmanager
async def held_running(backend: Backend, tag: str) -> AsyncIterator[tuple[zag.Engine, Any]]:
    """A `held` flow run in a task until its gate atom is stored RUNNING: yields the
    engine and the task; the gate is opened and the task ended on the way out."""
    from support import eventually

    engine = zag.Engine.from_factory(flows.held, store={"tag": tag}, backend=backend)
    running = asyncio.create_task(engine.run())

    async def gate_running() -> bool:
        try:
            detail = await backend.load_flow(engine.flow_id)
        except NotFound:
            return False  # not saved yet
        return "gate" in detail.atoms and detail.atoms["gate"].state == "RUNNING"

    try:
        await eventually(gate_running, what="the gate atom running")
        yield engine, running
    finally:
        flows.gate_for(tag).set()
        if not running.done():
            running.cancel()
        await asyncio.gather(running, return_exceptions=True)


async def suspend_one(backend: Backend, tag: str) -> str:
    """A `held` flow suspended while its gate ran (the gate is open afterwards)."""
    async with held_running(backend, tag) as (engine, running):
        engine.suspend()
        flows.gate_for(tag).set()
        await running
    assert (await backend.load_flow(engine.flow_id)).state is FlowState.SUSPENDED
    return engine.flow_id


@pytest.fixture
def chromium() -> Path:
    """Debian's Chromium (a skip without it, a failure under CI)."""
    from .browser import CHROMIUM, missing

    if not CHROMIUM.exists():
        missing(f"no browser at {CHROMIUM}")
    return CHROMIUM


@pytest.fixture
async def served(stored: Stored) -> AsyncIterator[str]:
    """The UI (actions on, with the browser token) served on a free port (a test
    module may override this fixture to serve it with other options)."""
    from .browser import TOKEN, serve_ui

    async with serve_ui(asgi_app(stored.backend, actions=True, token=TOKEN)) as url:
        yield url


@pytest.fixture
async def page(chromium: Path, served: str) -> AsyncIterator[Any]:
    """A headless Chromium page (the UI is being served at `served`)."""
    from .browser import open_page

    async with open_page(chromium) as opened:
        yield opened
