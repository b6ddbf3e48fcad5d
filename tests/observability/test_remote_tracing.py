"""A remote atom's trace continues on its worker through RabbitMQ message headers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from support import eventually

import zag_async as zag
from zag_async.telemetry import Tracing, trace_workers
from zag_async.workers.amqp import RemoteExecutor, Worker

from . import flows
from .conftest import one, parent_of


@pytest.fixture
async def executor(
    amqp_url: str, topic: str, provider: TracerProvider
) -> AsyncIterator[RemoteExecutor]:
    """A worker serving flows' tasks and an executor for them, both traced."""
    hooks = trace_workers(tracer_provider=provider)
    async with Worker(
        amqp_url,
        topic=topic,
        tasks=[flows.double, flows.charge, flows.explode],
        announce_every=0.5,
        tracing=hooks,
    ) as worker:
        serving = asyncio.create_task(worker.serve())
        try:
            async with RemoteExecutor(
                amqp_url, topics=[topic], discovery_timeout=10, tracing=hooks
            ) as executor:
                await eventually(lambda: executor.workers(), what="the worker to announce")
                yield executor
        finally:
            worker.stop()
            async with asyncio.timeout(10):
                await serving


async def test_worker_span_is_a_child_of_the_engine_atom_span(
    executor: RemoteExecutor, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    engine = zag.Engine(
        zag.linear("remote", flows.double),
        store={"x": 21},
        executor=executor,
        listeners=[Tracing(tracer_provider=provider)],
    )
    assert (await engine.run())["doubled"] == 42

    spans = exporter.get_finished_spans()
    flow = one(spans, "zag.flow remote")
    atom = one(spans, "zag.atom double")
    remote = one(spans, "zag.remote double")
    assert parent_of(atom) == flow.context.span_id
    assert remote.parent is not None and remote.parent.is_remote  # it came through the headers
    assert remote.parent.span_id == atom.context.span_id
    assert remote.context.trace_id == atom.context.trace_id == flow.context.trace_id
    assert remote.kind is SpanKind.CONSUMER
    assert remote.attributes is not None
    assert remote.attributes["zag.flow"] == "remote"
    assert remote.attributes["zag.atom"] == "double"
    assert remote.attributes["zag.action"] == "execute"
    assert remote.attributes["zag.state"] == "SUCCESS"
    assert str(remote.attributes["zag.task"]).endswith("flows:double")
    # The task's own span, on the worker, is a child of the worker's span.
    assert parent_of(one(spans, "user work")) == remote.context.span_id


async def test_a_remote_failure_is_recorded_on_both_sides(
    executor: RemoteExecutor, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    engine = zag.Engine(
        zag.linear("remote-fail", flows.charge, flows.explode.bind(inject={"doubled": 2})),
        store={"x": 1},
        executor=executor,
        listeners=[Tracing(tracer_provider=provider)],
    )
    with pytest.raises(flows.Boom):
        await engine.run()

    spans = exporter.get_finished_spans()
    atom = one(spans, "zag.atom explode")
    remote = [s for s in spans if s.name == "zag.remote explode"]
    assert len(remote) == 1
    assert remote[0].parent is not None and remote[0].parent.span_id == atom.context.span_id
    for span in (atom, remote[0]):
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes is not None and span.attributes["zag.state"] == "FAILURE"
        (event,) = span.events
        assert event.attributes is not None
        assert event.attributes["exception.message"] == "cannot use 2"
        # The engine side has only the failure's record, traceback included.
        assert "raise Boom" in str(event.attributes["exception.stacktrace"])
    # Reverts travel too (explode has no revert function: nothing to send).
    remote_charge = [s for s in spans if s.name == "zag.remote charge"]
    assert sorted(str((s.attributes or {})["zag.action"]) for s in remote_charge) == [
        "execute",
        "revert",
    ]
    worker_revert = next(s for s in remote_charge if (s.attributes or {})["zag.action"] == "revert")
    assert parent_of(worker_revert) == one(spans, "zag.revert charge").context.span_id
    assert (worker_revert.attributes or {})["zag.state"] == "REVERTED"
    assert one(spans, "zag.revert explode")


async def test_without_trace_workers_requests_carry_no_trace_context(
    amqp_url: str, topic: str, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    trace_workers(tracer_provider=provider)  # hooks not passed on: nothing traced
    async with Worker(amqp_url, topic=topic, tasks=[flows.double], announce_every=0.5) as worker:
        serving = asyncio.create_task(worker.serve())
        try:
            async with RemoteExecutor(amqp_url, topics=[topic]) as executor:
                await eventually(lambda: executor.workers(), what="the worker to announce")
                await zag.Engine(
                    zag.linear("untraced", flows.double),
                    store={"x": 1},
                    executor=executor,
                    listeners=[Tracing(tracer_provider=provider)],
                ).run()
        finally:
            worker.stop()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10):
                    await serving
    spans = exporter.get_finished_spans()
    assert sorted(s.name for s in spans) == ["user work", "zag.atom double", "zag.flow untraced"]
    assert one(spans, "user work").parent is None  # the worker started a trace of its own
