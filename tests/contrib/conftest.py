"""Fixtures for the web-service tests.

`urls` gives each test a durable backend and a job board of its own, as
`Urls(backend, board)`: SQLite in tmp_path with a named memory:// board, or
PostgreSQL (a fresh database per session) with ZooKeeper (a fresh root per test,
deleted afterwards). A second service opened on the same `urls` sees the same
flows and jobs, as another process would.

`web` runs the same scenarios on both frameworks: `web.open(**service options)`
starts the matching example app (examples/fastapi_app.py through httpx's ASGI
transport and asgi-lifespan, examples/aiohttp_app.py through aiohttp's test
server) and yields a `Client` whose `post`/`get` return `Reply(status, headers,
body)`; leaving the block shuts the app down.

Without a reachable PostgreSQL, ZooKeeper or RabbitMQ the cases needing them
skip, unless CI is set: then they fail, because CI must run them.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pytest
from support import delete_zk_path, eventually, fresh_pg_database, pg_admin

from . import flows

ROOT = Path(__file__).resolve().parents[2]


def load_example(name: str) -> ModuleType:
    """Import examples/NAME.py as module NAME (the name its factory references use)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _reset_flows() -> Iterator[None]:
    flows.reset()
    yield
    flows.reset()


async def shipping(service: Any) -> bool:
    """True once the flow the service runs for a request is shipping (its `ship` atom is
    RUNNING). The flow's record is written when its first atom starts, so at first
    there may be nothing to read."""
    from zag_async.errors import NotFound

    ids = service.running_flows
    if not ids:
        return False
    try:
        status = await service.flow_status(ids[0])
    except NotFound:
        return False
    return any(a.name == "ship" and a.state == "RUNNING" for a in status.atoms)


# -- servers (zk_server and amqp_url are in tests/conftest.py) ----------------------


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this session, as a zag URL."""
    with fresh_pg_database("zag_web") as url:
        yield url


def pg_connections(url: str) -> int:
    """How many sessions are open on the database of `url` (ours: nobody else uses it)."""
    database = urlsplit(url).path.lstrip("/")
    return int(
        pg_admin(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            database,
        )
    )


# -- where a test's flows and jobs live ---------------------------------------------------


@dataclass(frozen=True)
class Urls:
    backend: str
    board: str

    def options(self) -> dict[str, str]:
        return {"backend": self.backend, "board": self.board}


@pytest.fixture(params=["sqlite", "postgres+zookeeper"])
async def urls(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Urls]:
    name = uuid.uuid4().hex
    if request.param == "sqlite":
        yield Urls(f"sqlite+aiosqlite:///{tmp_path}/flows.db", f"memory://web-test-{name}")
        return
    pg = str(request.getfixturevalue("pg_url"))
    server = str(request.getfixturevalue("zk_server"))
    yield Urls(pg, f"zookeeper://{server}/zag-test/web-{name}")
    await delete_zk_path(server, f"/zag-test/web-{name}")


# -- the two frameworks, driven the same way ---------------------------------------------


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: Any


class Client:
    """A test client of a running example app, whichever the framework."""

    def __init__(self, post: Any, get: Any, app: Any, service: Any) -> None:
        self._post, self._get = post, get
        self.app = app
        self.service = service  #: the app's running ZagService

    async def post(self, path: str, **json: Any) -> Reply:
        return await self._post(path, json)

    async def get(self, path: str) -> Reply:
        return await self._get(path)

    async def poll(self, path: str, until: Callable[[Any], bool], within: float = 10.0) -> Any:
        """GET `path` until `until(body)` holds; returns the body."""

        async def check() -> Any:
            reply = await self.get(path)
            return reply.body if reply.status == 200 and until(reply.body) else None

        return await eventually(check, within=within, what=f"GET {path} to satisfy {until}")


class Framework:
    def __init__(self, name: str) -> None:
        self.name = name
        self.example = load_example(f"{name}_app")

    def create_app(self, **options: Any) -> Any:
        return self.example.create_app(**options)

    @contextlib.asynccontextmanager
    async def open(self, app: Any = None, **options: Any) -> AsyncIterator[Client]:
        """Start `app` (default: the example app with `options`) and yield a client."""
        app = app if app is not None else self.create_app(**options)
        if self.name == "fastapi":
            import httpx
            from asgi_lifespan import LifespanManager

            async with (
                LifespanManager(app, startup_timeout=20, shutdown_timeout=20) as manager,
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=manager.app), base_url="http://test"
                ) as http,
            ):

                async def post(path: str, json: Any) -> Reply:
                    r = await http.post(path, json=json)
                    return Reply(r.status_code, dict(r.headers), r.json())

                async def get(path: str) -> Reply:
                    r = await http.get(path)
                    return Reply(r.status_code, dict(r.headers), r.json())

                yield Client(post, get, app, app.state.zag)
            return
        from aiohttp.test_utils import TestClient, TestServer

        from zag_async.contrib.aiohttp import get_zag

        async with TestClient(TestServer(app)) as http:

            async def post(path: str, json: Any) -> Reply:
                r = await http.post(path, json=json)
                return Reply(r.status, dict(r.headers), await r.json())

            async def get(path: str) -> Reply:
                r = await http.get(path)
                body = await r.json() if r.content_type == "application/json" else await r.text()
                return Reply(r.status, dict(r.headers), body)

            yield Client(post, get, app, get_zag(app))


@pytest.fixture(params=["fastapi", "aiohttp"])
def web(request: pytest.FixtureRequest) -> Framework:
    return Framework(str(request.param))


async def delete_queue(url: str, name: str) -> None:
    import aio_pika

    with contextlib.suppress(Exception):
        async with asyncio.timeout(10):
            connection = await aio_pika.connect(url, timeout=10)
            try:
                channel = await connection.channel()
                await channel.queue_delete(name)
            finally:
                await connection.close()
