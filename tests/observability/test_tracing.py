"""Traces of local engines, checked with the OpenTelemetry SDK's in-memory exporter."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import zag_async as zag
from zag_async.telemetry import Tracing

from . import flows
from .conftest import by_name, one, parent_of

ROOT = Path(__file__).resolve().parents[2]


async def test_success_one_flow_span_with_an_atom_span_per_atom(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    engine = zag.Engine(
        zag.linear("order", flows.double, flows.add),
        store={"x": 2},
        listeners=[Tracing(tracer_provider=provider)],
    )
    assert await engine.run() == {"x": 2, "doubled": 4, "total": 5}

    spans = exporter.get_finished_spans()
    flow = one(spans, "zag.flow order")
    assert dict(flow.attributes or {}) == {
        "zag.flow": "order",
        "zag.flow_id": engine.flow_id,
        "zag.state": "SUCCESS",
    }
    assert flow.parent is None
    assert flow.status.status_code is StatusCode.UNSET
    for name, atom in (("zag.atom double", "double"), ("zag.atom add", "add")):
        span = one(spans, name)
        assert parent_of(span) == flow.context.span_id
        assert span.context.trace_id == flow.context.trace_id
        assert dict(span.attributes or {}) == {
            "zag.flow": "order",
            "zag.flow_id": engine.flow_id,
            "zag.atom": atom,
            "zag.action": "execute",
            "zag.attempt": 1,
            "zag.state": "SUCCESS",
        }
        assert span.kind is SpanKind.INTERNAL
    # The task's own span is a child of its atom span; its progress is an event there.
    double = one(spans, "zag.atom double")
    assert parent_of(one(spans, "user work")) == double.context.span_id
    assert [(e.name, dict(e.attributes or {})) for e in double.events] == [
        ("zag.progress", {"zag.progress": 0.5})
    ]
    # Spans nest in time: the atoms run inside the flow's run.
    assert flow.start_time is not None and flow.end_time is not None
    assert all(flow.start_time <= s.start_time and s.end_time <= flow.end_time for s in spans)  # type: ignore[operator]


async def test_failure_records_the_error_and_reverts_are_spans(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    engine = zag.Engine(
        zag.linear("pay", flows.charge, flows.double, flows.explode),
        store={"x": 3},
        listeners=[Tracing(tracer_provider=provider)],
    )
    with pytest.raises(flows.Boom, match="cannot use 6"):
        await engine.run()

    spans = exporter.get_finished_spans()
    flow = one(spans, "zag.flow pay")
    assert flow.attributes is not None and flow.attributes["zag.state"] == "REVERTED"
    assert flow.status.status_code is StatusCode.ERROR
    assert "Boom: cannot use 6" in (flow.status.description or "")
    assert [e.name for e in flow.events] == ["exception"]

    failed = one(spans, "zag.atom explode")
    assert failed.attributes is not None and failed.attributes["zag.state"] == "FAILURE"
    assert failed.status.status_code is StatusCode.ERROR
    (event,) = failed.events
    assert event.name == "exception"
    assert event.attributes is not None
    assert str(event.attributes["exception.type"]).endswith("Boom")
    assert event.attributes["exception.message"] == "cannot use 6"
    assert "raise Boom" in str(event.attributes["exception.stacktrace"])

    # Every atom is reverted, newest first, each in a revert span under the flow span.
    reverts = sorted(
        by_name(spans, "zag.revert explode")
        + by_name(spans, "zag.revert double")
        + by_name(spans, "zag.revert charge"),
        key=lambda s: s.start_time or 0,
    )
    assert [s.attributes["zag.atom"] for s in reverts if s.attributes] == [
        "explode",
        "double",
        "charge",
    ]
    for span in reverts:
        assert parent_of(span) == flow.context.span_id
        assert span.attributes is not None
        assert span.attributes["zag.action"] == "revert"
        assert span.attributes["zag.state"] == "REVERTED"
        assert span.status.status_code is StatusCode.UNSET


async def test_a_failing_revert_ends_revert_failure_with_the_error(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    @zag.task(revert_retry=zag.retry.RevertRetry(attempts=1))
    async def stuck() -> None:
        return None

    @stuck.revert
    async def unstick(**_: object) -> None:
        raise RuntimeError("cannot undo")

    flow = zag.linear("undo", stuck, flows.explode.bind(inject={"doubled": 1}))
    with pytest.raises(RuntimeError, match="cannot undo"):
        await zag.Engine(flow, listeners=[Tracing(tracer_provider=provider)]).run()
    spans = exporter.get_finished_spans()
    revert = one(spans, "zag.revert stuck")
    assert revert.attributes is not None and revert.attributes["zag.state"] == "REVERT_FAILURE"
    assert revert.status.status_code is StatusCode.ERROR
    assert [e.name for e in revert.events] == ["exception"]
    flow_span = one(spans, "zag.flow undo")
    assert flow_span.attributes is not None and flow_span.attributes["zag.state"] == "UNCOMPENSATED"


async def test_each_retry_attempt_is_its_own_span(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    flows.CALLS.clear()
    flaky = flows.flaky.bind(retry=zag.retry.Times(3))
    engine = zag.Engine(
        zag.linear("retrying", flaky),
        store={"key": "retry-spans", "fail_times": 2},
        listeners=[Tracing(tracer_provider=provider)],
    )
    await engine.run()

    spans = exporter.get_finished_spans()
    flow = one(spans, "zag.flow retrying")
    attempts = sorted(by_name(spans, "zag.atom flaky"), key=lambda s: s.start_time or 0)
    assert [(s.attributes or {}).get("zag.attempt") for s in attempts] == [1, 2, 3]
    assert [(s.attributes or {}).get("zag.state") for s in attempts] == [
        "FAILURE",
        "FAILURE",
        "SUCCESS",
    ]
    assert [s.status.status_code for s in attempts] == [
        StatusCode.ERROR,
        StatusCode.ERROR,
        StatusCode.UNSET,
    ]
    assert all(parent_of(s) == flow.context.span_id for s in attempts)
    # Between attempts the failed one is reverted, and the controller restarts its subflow.
    assert len(by_name(spans, "zag.revert flaky")) == 2
    assert [e.name for e in flow.events] == ["zag.retrying", "zag.retrying"]
    assert flow.attributes is not None and flow.attributes["zag.state"] == "SUCCESS"


async def test_parallel_atoms_each_parent_their_own_work(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    naps = [flows.nap.bind(name=f"nap{n}", inject={"seconds": 0.05}) for n in range(4)]
    tracing = Tracing(tracer_provider=provider)
    # Two flows at once through one Tracing object: nothing crosses over.
    await asyncio.gather(
        zag.Engine(zag.unordered("left", *naps), listeners=[tracing]).run(),
        zag.Engine(zag.unordered("right", *naps), listeners=[tracing]).run(),
    )

    spans = exporter.get_finished_spans()
    for name in ("left", "right"):
        flow = one(spans, f"zag.flow {name}")
        atoms = [
            s
            for s in spans
            if s.name.startswith("zag.atom") and s.attributes and s.attributes["zag.flow"] == name
        ]
        assert sorted(s.name for s in atoms) == [f"zag.atom nap{n}" for n in range(4)]
        assert {parent_of(s) for s in atoms} == {flow.context.span_id}
        assert {s.context.trace_id for s in atoms} == {flow.context.trace_id}
        # They overlapped: each started before any other ended.
        assert max(s.start_time or 0 for s in atoms) < min(s.end_time or 0 for s in atoms)
    work = by_name(spans, "user work")
    atom_ids = {s.context.span_id for s in spans if s.name.startswith("zag.atom")}
    assert len(work) == 8 and {parent_of(s) for s in work} <= atom_ids
    assert len({parent_of(s) for s in work}) == 8


async def test_skipped_atoms_are_flow_events(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    g = zag.graph("switch", flows.double, flows.add)
    g.link(flows.double, flows.add, decider=lambda history: False)
    await zag.Engine(g, store={"x": 1}, listeners=[Tracing(tracer_provider=provider)]).run()
    spans = exporter.get_finished_spans()
    flow = one(spans, "zag.flow switch")
    assert [(e.name, dict(e.attributes or {})) for e in flow.events] == [
        ("zag.ignored", {"zag.atom": "add"})
    ]
    assert not by_name(spans, "zag.atom add")


async def test_cancelled_run_ends_its_spans(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    engine = zag.Engine(
        zag.linear("slow", flows.nap.bind(inject={"seconds": 30})),
        listeners=[Tracing(tracer_provider=provider)],
    )
    runner = asyncio.ensure_future(engine.run())
    await asyncio.sleep(0.1)
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    spans = exporter.get_finished_spans()
    atom = one(spans, "zag.atom nap")
    assert atom.attributes is not None and atom.attributes["zag.state"] == "CANCELLED"
    flow = one(spans, "zag.flow slow")
    assert flow.attributes is not None and flow.attributes["zag.state"] == "SUSPENDED"
    assert flow.status.status_code is StatusCode.UNSET


async def test_engines_without_tracing_take_no_trace_path() -> None:
    engine = zag.Engine(zag.linear("plain", flows.double), store={"x": 1}, listeners=[print])
    await engine.run()
    assert not engine.tracing


def _python(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )


def test_import_zag_async_imports_neither_extra() -> None:
    out = _python(
        "import sys, zag_async\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('opentelemetry', 'prometheus_client')))"
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("module", "blocked", "extra"),
    [("telemetry", "opentelemetry", "otel"), ("metrics", "prometheus_client", "prometheus")],
)
def test_a_missing_extra_names_it(module: str, blocked: str, extra: str) -> None:
    out = _python(
        f"import sys\nsys.modules[{blocked!r}] = None\n"
        "from zag_async.errors import ConfigurationError\n"
        f"try:\n    import zag_async.{module}\n"
        "except ConfigurationError as exc:\n    print(exc)\n"
    )
    assert out.returncode == 0, out.stderr
    assert f"pip install 'zag-async[{extra}]'" in out.stdout


async def test_two_tracing_listeners_each_get_every_span(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    other_exporter = InMemorySpanExporter()
    other = TracerProvider()
    other.add_span_processor(SimpleSpanProcessor(other_exporter))
    listeners = [Tracing(tracer_provider=provider), Tracing(tracer_provider=other)]
    await zag.Engine(zag.linear("twice", flows.double), store={"x": 1}, listeners=listeners).run()
    # (They share one current context, so the second's spans nest in the first's.)
    for spans in (exporter.get_finished_spans(), other_exporter.get_finished_spans()):
        assert (one(spans, "zag.flow twice").attributes or {})["zag.state"] == "SUCCESS"
        assert (one(spans, "zag.atom double").attributes or {})["zag.state"] == "SUCCESS"
    other.shutdown()
