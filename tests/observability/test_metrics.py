"""Prometheus metrics, scraped over HTTP from the real endpoint and parsed."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aio_pika
import httpx
import pytest
from prometheus_client import CollectorRegistry
from support import eventually

import zag_async as zag
from zag_async.metrics import Metrics, serve_metrics
from zag_async.workers.amqp import declare_topology

from . import flows
from .conftest import parse, scrape, value


async def test_engine_and_conductor_events_are_counted(caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics()
    flows.CALLS.clear()
    async with serve_metrics(metrics, port=0) as server:
        for x in (1, 2):
            await zag.Engine(
                zag.linear("order", flows.double, flows.add), store={"x": x}, listeners=[metrics]
            ).run()
        with pytest.raises(flows.Boom):
            await zag.Engine(
                zag.linear("pay", flows.charge, flows.double, flows.explode),
                store={"x": 1},
                listeners=[metrics],
            ).run()
        await zag.Engine(
            zag.linear("retrying", flows.flaky.bind(retry=zag.retry.Times(3))),
            store={"key": "metrics", "fail_times": 2},
            listeners=[metrics],
        ).run()
        async with (
            zag.connect("memory://") as db,
            zag.jobs.connect("memory://obs-metrics", backend=db) as board,
        ):
            job = await board.post("greet", flows.greet, "ann")
            async with zag.Conductor(
                board, backend=db, listeners=[metrics], engine_listeners=lambda job: [metrics]
            ) as conductor:
                worker = asyncio.create_task(conductor.run())
                async with asyncio.timeout(10):
                    assert (await job.wait()).state == "SUCCESS"
                conductor.stop()
                await worker

        samples = await scrape(server.url)

    def atoms(what: str, flow: str, atom: str) -> float | None:
        return value(samples, f"zag_atoms_{what}_total", flow=flow, atom=atom)

    assert atoms("started", "order", "double") == 2
    assert atoms("succeeded", "order", "add") == 2
    assert atoms("started", "pay", "explode") == 1
    assert atoms("failed", "pay", "explode") == 1
    assert atoms("succeeded", "pay", "explode") is None  # no series for what never happened
    assert atoms("reverted", "pay", "charge") == 1
    assert atoms("reverted", "pay", "explode") == 1
    assert atoms("started", "retrying", "flaky") == 3
    assert atoms("failed", "retrying", "flaky") == 2
    assert atoms("succeeded", "retrying", "flaky") == 1
    assert value(samples, "zag_retries_total", flow="retrying", atom="flaky.retry") == 2
    assert atoms("succeeded", "greet", "add") == 1  # run by the conductor
    assert value(samples, "zag_atom_duration_seconds_count", flow="order", atom="double") == 2
    assert value(samples, "zag_atom_duration_seconds_count", flow="pay", atom="explode") == 1
    assert value(samples, "zag_flows_total", flow="order", state="SUCCESS") == 2
    assert value(samples, "zag_flows_total", flow="pay", state="REVERTED") == 1
    assert value(samples, "zag_flows_total", flow="greet", state="SUCCESS") == 1
    assert value(samples, "zag_jobs_claimed_total", job="greet") == 1
    assert value(samples, "zag_jobs_consumed_total", job="greet") == 1
    assert value(samples, "zag_jobs_abandoned_total", job="greet") is None
    assert "could not be read" not in caplog.text


async def test_pending_jobs_gauge_follows_the_board() -> None:
    metrics = Metrics()
    async with (
        zag.connect("memory://") as db,
        zag.jobs.connect("memory://obs-pending", backend=db) as board,
        metrics.watch_board(board, name="main"),
        serve_metrics(metrics, port=0) as server,
    ):
        assert value(await scrape(server.url), "zag_jobs_pending", board="main") == 0
        first = await board.post("greet", flows.greet, "ann")
        await board.post("greet", flows.greet, "bob", delay=60)  # delayed jobs are pending too
        assert value(await scrape(server.url), "zag_jobs_pending", board="main") == 2
        await board.claim(first, "someone")
        assert value(await scrape(server.url), "zag_jobs_pending", board="main") == 1
    samples = parse(metrics.exposition()[0].decode())
    assert value(samples, "zag_jobs_pending", board="main") is None  # gone with the watch


async def test_queue_depth_of_a_topic_nobody_serves(amqp_url: str, topic: str) -> None:
    metrics = Metrics()
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        work, _ = await declare_topology(channel, [topic], delivery_limit=5)
        for n in range(3):
            await work.publish(aio_pika.Message(f"request {n}".encode()), routing_key=topic)
    finally:
        await connection.close()
    missing = f"{topic}-none"
    async with (
        metrics.watch_queues(amqp_url, [missing, topic]),
        serve_metrics(metrics, port=0) as server,
    ):

        async def three_waiting() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
            samples = await scrape(server.url)
            return samples if value(samples, "zag_queue_depth", topic=topic) == 3 else None

        samples = await eventually(three_waiting, what="3 requests in the queue")
        assert value(samples, "zag_queue_consumers", topic=topic) == 0
        assert value(samples, "zag_queue_depth", topic=missing) == 0  # no such queue yet


async def test_an_unreachable_source_keeps_the_scrape_working(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = Metrics(refresh_timeout=1.0)
    with caplog.at_level(logging.WARNING, "zag_async.metrics"):
        async with (
            metrics.watch_queues("amqp://guest:guest@127.0.0.1:1/", ["x"]),
            serve_metrics(metrics, port=0) as server,
        ):
            samples = await scrape(server.url)
    assert value(samples, "zag_queue_depth", topic="x") is None
    assert "could not be read" in caplog.text


async def test_the_endpoint_speaks_just_enough_http() -> None:
    metrics = Metrics()
    async with serve_metrics(metrics, port=0) as server, httpx.AsyncClient() as client:
        base = f"http://{server.host}:{server.port}"
        assert (await client.get(f"{base}/")).status_code == 404
        assert (await client.post(f"{base}/metrics")).status_code == 405
        head = await client.head(f"{base}/metrics")
        assert head.status_code == 200 and head.content == b""
        openmetrics = await client.get(
            f"{base}/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
        )
        assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
        assert openmetrics.text.endswith("# EOF\n")
        # A client that never finishes its request does not hold the server's exit.
        reader, writer = await asyncio.open_connection(server.host, server.port)
        writer.write(b"GET /metrics HTTP/1.1\r\n")
        await writer.drain()
        garbage = await client.get(f"{base}/metrics?x=1")
        assert garbage.status_code == 200
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()


async def test_asgi_app_mounted_in_fastapi() -> None:
    from fastapi import FastAPI

    metrics = Metrics()
    await zag.Engine(zag.linear("order", flows.double), store={"x": 1}, listeners=[metrics]).run()
    app = FastAPI()
    app.mount("/metrics", metrics.asgi_app())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        response = await client.get("/metrics/")
    assert response.status_code == 200
    samples = parse(response.text)
    assert value(samples, "zag_atoms_succeeded_total", flow="order", atom="double") == 1


def test_metrics_objects_do_not_collide() -> None:
    first, second = Metrics(), Metrics()
    assert first.registry is not second.registry
    shared = CollectorRegistry()
    Metrics(registry=shared)
    with pytest.raises(ValueError, match="Duplicated"):
        Metrics(registry=shared)
