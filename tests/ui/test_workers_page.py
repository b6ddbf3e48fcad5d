"""The workers page against a real RabbitMQ (tests/conftest.py `amqp_url`): live
workers heard on discovery, their topic's queue depth and consumers, the dead
letters; one listener per app; malformed discovery messages ignored; a broker
that is away said so, without a hang."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount
from support import eventually

import zag_async as zag
from zag_async.contrib.ui import asgi_app
from zag_async.contrib.ui import workers as page_module
from zag_async.contrib.ui.common import Ui

from . import flows
from .conftest import Client, Stored
from .test_accessibility import parsed

pytestmark = pytest.mark.services  # a real broker

#: A request after the first answers well within the first one's wait for answers.
FIRST_WAIT_BOUND = page_module.FIRST_WAIT * 0.8


@contextlib.asynccontextmanager
async def channel(url: str) -> AsyncIterator[Any]:
    import aio_pika

    connection = await aio_pika.connect(url, timeout=10)
    try:
        yield await connection.channel()
    finally:
        await connection.close()


@pytest.fixture
async def topic(amqp_url: str) -> AsyncIterator[str]:
    """A topic of this test's own; its queue is deleted afterwards."""
    name = f"ui-{uuid.uuid4().hex[:8]}"
    yield name
    with contextlib.suppress(Exception):
        async with asyncio.timeout(10), channel(amqp_url) as ch:
            await ch.queue_delete(f"zag.q.{name}")


@contextlib.asynccontextmanager
async def open_ui(stored: Stored, **options: Any) -> AsyncIterator[tuple[httpx.AsyncClient, Ui]]:
    """Like the `client` fixture, also handing out the app's `Ui` (to see its tasks)."""
    app = asgi_app(stored.backend, **options)
    transport = httpx.ASGITransport(app=Starlette(routes=[Mount("/zag", app)]))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://ui.test") as http:
            yield http, app.state.ui
    finally:
        await app.state.ui.aclose()


def listeners(ui: Ui) -> list[asyncio.Task[Any]]:
    return [t for t in ui.tasks if t.get_name() == "zag-ui-discovery"]


@contextlib.asynccontextmanager
async def serving(url: str, topic: str, name: str) -> AsyncIterator[zag.Worker]:
    """A real worker serving `topic` in this process until the block ends."""
    async with zag.Worker(
        url, topic=topic, tasks=[flows.one, flows.two], announce_every=0.5, name=name
    ) as worker:
        task = asyncio.create_task(worker.serve())
        try:
            yield worker
        finally:
            worker.stop()
            async with asyncio.timeout(10):
                await task


async def publish(url: str, exchange: str, body: bytes, routing_key: str = "") -> None:
    import aio_pika

    async with channel(url) as ch:
        target = await ch.get_exchange(exchange, ensure=False)
        await target.publish(aio_pika.Message(body), routing_key=routing_key)


async def test_without_a_broker_the_page_says_so(client: Client) -> None:
    async with client() as http:
        reply = await http.get("/zag/workers")
    assert reply.status_code == 200
    assert "No broker is configured" in reply.text


async def test_live_workers_and_their_queue(stored: Stored, amqp_url: str, topic: str) -> None:
    async with (
        serving(amqp_url, topic, f"w-<{topic}>"),
        open_ui(stored, broker=amqp_url) as (
            http,
            ui,
        ),
    ):
        first = await http.get("/zag/workers")
        started = listeners(ui)
    assert first.status_code == 200
    text = first.text
    assert f"w-&lt;{topic}&gt;" in text  # named, escaped
    assert "tests.ui.flows:one" in text or f"{flows.__name__}:one" in text
    row = text.split(f"<td>{topic}</td><td><code>zag.q.{topic}</code></td>")[1]
    assert row.startswith('<td class="depth">0</td><td>1</td><td>1</td>'), row[:80]
    assert "zag.dead" in text
    assert len(started) == 1
    page = parsed(text)
    assert page.tables == page.captions == 2
    assert all(scope == "col" for scope in page.headers)


async def test_depth_counts_waiting_requests_and_the_listener_is_kept(
    stored: Stored, amqp_url: str, topic: str
) -> None:
    async with open_ui(stored, broker=amqp_url) as (http, ui):
        async with serving(amqp_url, topic, "w1"):
            await http.get("/zag/workers")  # first look: the worker answers the ping
        for n in range(3):
            await publish(amqp_url, "zag.work", f"request {n}".encode(), routing_key=topic)

        async def three_waiting() -> str | None:
            reply = await http.get("/zag/workers")
            cell = f'<td><code>zag.q.{topic}</code></td><td class="depth">3</td><td>0</td>'
            return reply.text if cell in reply.text else None

        text = await eventually(three_waiting, what="3 requests waiting, no consumer")
        started = time.perf_counter()
        await http.get("/zag/workers")  # no live worker now: still no wait for answers
        took = time.perf_counter() - started
        kept = listeners(ui)
    assert "No live worker announced itself" in text  # w1 said it was leaving
    assert len(kept) == 1
    assert took < FIRST_WAIT_BOUND  # later requests answer from the registry at once
    assert kept[0].done()  # ui.aclose() ended it


async def test_malformed_discovery_messages_are_ignored(
    client: Client, amqp_url: str, topic: str
) -> None:
    async with client(broker=amqp_url) as http:
        await http.get("/zag/workers")
        for body in (b"not json", b'{"v": 1, "kind": "worker"}', b'{"v": 1, "kind": "odd"}'):
            await publish(amqp_url, "zag.discovery", body)
        good = zag.workers.protocol.Announcement(f"hand-{topic}", topic, frozenset({"m:t"}), 30.0)
        await publish(amqp_url, "zag.discovery", good.dumps())

        async def listed() -> str | None:
            reply = await http.get("/zag/workers")
            return reply.text if f"hand-{topic}" in reply.text else None

        text = await eventually(listed, what="the well-formed announcement listed")
    assert text.count("<tr><td>") >= 1 and "m:t" in text


async def test_an_unreachable_broker_is_said_without_a_hang(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(page_module, "BROKER_TIMEOUT", 1.0)
    with socket_closed() as port:
        async with client(broker=f"amqp://guest:guest@127.0.0.1:{port}/") as http:
            started = time.perf_counter()
            reply = await http.get("/zag/workers")
            took = time.perf_counter() - started
            again = await http.get("/zag/workers")
    assert reply.status_code == again.status_code == 200
    assert "The broker is unreachable" in reply.text
    assert "The broker is unreachable" in again.text
    assert took < 8.0


async def test_a_broker_that_never_answers_is_said_within_the_bound(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A port that takes the TCP connection but never speaks AMQP: the page says so
    after BROKER_TIMEOUT, and the next request answers at once."""
    import socket

    monkeypatch.setattr(page_module, "BROKER_TIMEOUT", 1.0)
    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen(4)  # never accepted: the handshake never comes
        port = mute.getsockname()[1]
        async with client(broker=f"amqp://guest:guest@127.0.0.1:{port}/") as http:
            started = time.perf_counter()
            reply = await http.get("/zag/workers")
            first = time.perf_counter() - started
            started = time.perf_counter()
            again = await http.get("/zag/workers")
            second = time.perf_counter() - started
    assert reply.status_code == again.status_code == 200
    assert "The broker is unreachable" in reply.text and "The broker is unreachable" in again.text
    assert first < 4.0 and second < 1.0, (first, second)  # bounds, not timings


@contextlib.contextmanager
def socket_closed() -> Any:
    """A local port nothing listens on."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    yield port


async def test_the_ui_command_takes_a_board_and_a_broker(stored: Stored, amqp_url: str) -> None:
    from .test_cli import cli, served

    args = ("ui", "--backend", stored.backend.url, "--board", "memory://", "--broker", amqp_url)
    async with served(*args) as (http, listing):
        jobs = await http.get("/jobs")
        workers = await http.get("/workers")
    assert listing.status_code == jobs.status_code == workers.status_code == 200
    assert "No job is due." in jobs.text
    assert "<h2>Live workers</h2>" in workers.text and "unreachable" not in workers.text
    wrong = cli("ui", "--backend", stored.backend.url, "--broker", "http://nope")
    _, err = wrong.communicate(timeout=30)
    assert wrong.returncode == 2 and "--broker takes a RabbitMQ URL" in err
