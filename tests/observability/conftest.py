"""Fixtures for traces and metrics: an in-memory span exporter, RabbitMQ, scraping.

Spans go to a `TracerProvider` made per test (the global provider is never
set); `Tracing(tracer_provider=provider)` and `trace_workers(tracer_provider=
provider)` send them there. RabbitMQ is 127.0.0.1:5672 (or ZAG_TEST_AMQP=URL);
without it the tests that need it skip, unless CI is set: then they fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from . import flows


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture(autouse=True)
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    """The test's tracer provider; the tasks in flows.py open their own spans with it."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    flows.PROVIDER[:] = [provider]
    yield provider
    flows.PROVIDER.clear()
    provider.shutdown()


def by_name(spans: tuple[ReadableSpan, ...] | list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def one(spans: tuple[ReadableSpan, ...] | list[ReadableSpan], name: str) -> ReadableSpan:
    found = by_name(spans, name)
    assert len(found) == 1, f"{len(found)} spans named {name!r}: {[s.name for s in spans]}"
    return found[0]


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


# -- RabbitMQ (amqp_url is in tests/conftest.py) ---------------------------------------


@pytest.fixture
async def topic(amqp_url: str) -> AsyncIterator[str]:
    """A topic no other test uses; its queue is deleted afterwards."""
    import aio_pika

    name = f"obs-{uuid.uuid4().hex[:8]}"
    yield name
    with contextlib.suppress(Exception):
        async with asyncio.timeout(10):
            connection = await aio_pika.connect(amqp_url)
            try:
                channel = await connection.channel()
                await channel.queue_delete(f"zag.q.{name}")
            finally:
                await connection.close()


# -- scraping --------------------------------------------------------------------------


async def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """GET a metrics URL and parse it: {(sample name, sorted labels): value}."""
    async with httpx.AsyncClient() as client:
        response = await client.get(url, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))
