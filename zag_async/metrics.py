"""Prometheus metrics of engines, conductors, work queues and job boards.

Needs `pip install 'zag-async[prometheus]'`; `import zag_async` does not import it.

    from zag_async.metrics import Metrics, serve_metrics

    metrics = Metrics()
    async with serve_metrics(metrics, port=9464):          # GET http://127.0.0.1:9464/metrics
        await zag.Engine(flow, listeners=[metrics]).run()

A `Metrics` object is a listener for engines and for conductors alike
(`zag.Conductor(..., listeners=[metrics], engine_listeners=lambda job: [metrics])`).
It keeps its series in its own `CollectorRegistry` (pass
`registry=prometheus_client.REGISTRY` to join the global one):

    zag_atoms_started_total{flow,atom}         an atom started running (retry controllers too)
    zag_atoms_succeeded_total{flow,atom}
    zag_atoms_failed_total{flow,atom}
    zag_atoms_reverted_total{flow,atom}
    zag_atoms_revert_failed_total{flow,atom}
    zag_atom_duration_seconds{flow,atom}       histogram of execute calls (success or failure)
    zag_retries_total{flow,atom}               a retry controller (atom) restarted its subflow
    zag_flows_total{flow,state}                runs ended SUCCESS, REVERTED, FAILURE,
                                               UNCOMPENSATED, STUCK_PAST_PIVOT or SUSPENDED
    zag_atoms_unreverted_total{flow,atom}      a run ended (UNCOMPENSATED, STUCK_PAST_PIVOT)
                                               leaving this atom un-reverted
    zag_jobs_{claimed,consumed,abandoned,trashed,lost}_total{job}   conductor events
    zag_queue_depth{topic}, zag_queue_consumers{topic}   see `Metrics.watch_queues`
    zag_jobs_pending{board}                    see `Metrics.watch_board`

Labels are flow, atom and job names, so the number of series grows with the
number of distinct names (not with runs): name flows and jobs by kind
("resize"), never by instance ("resize-web-1"). Gauges are read on each
scrape of `serve_metrics` or `Metrics.asgi_app()` (no background task);
call `await metrics.refresh()` before other exposition.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import ConfigurationError
from .events import Event
from .jobs.base import JobBoard, JobState
from .jobs.conductor import ConductorEvent

try:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_asgi_app
    from prometheus_client.exposition import choose_encoder
except ImportError as exc:  # pragma: no cover - depends on installed extras
    raise ConfigurationError(f"metrics need: pip install 'zag-async[prometheus]' ({exc})") from exc

if TYPE_CHECKING:
    from aio_pika.abc import AbstractConnection

__all__ = ["Metrics", "MetricsServer", "serve_metrics"]

logger = logging.getLogger("zag_async.metrics")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_ATOM_COUNTERS = {
    "RUNNING": "started",
    "SUCCESS": "succeeded",
    "FAILURE": "failed",
    "REVERTED": "reverted",
    "REVERT_FAILURE": "revert_failed",
    "RETRYING": "retries",
}
_FLOW_ENDS = (
    "SUCCESS",
    "REVERTED",
    "FAILURE",
    "UNCOMPENSATED",
    "STUCK_PAST_PIVOT",
    "SUSPENDED",
)
_JOB_EVENTS = ("claimed", "consumed", "abandoned", "trashed", "lost")


class Metrics:
    """Prometheus series fed by engine and conductor events; pass it as a listener.

    Args:
        registry: where the series live; None makes a registry of its own.
        buckets: histogram buckets (seconds) for atom durations.
        refresh_timeout: how long one gauge source (a broker, a board) may
            take to answer on a scrape before its last value is kept.
    """

    def __init__(
        self,
        *,
        registry: CollectorRegistry | None = None,
        buckets: Sequence[float] = Histogram.DEFAULT_BUCKETS,
        refresh_timeout: float = 2.0,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.refresh_timeout = refresh_timeout
        r, atom = self.registry, ("flow", "atom")
        self._atoms: dict[str, Counter] = {
            "started": Counter("zag_atoms_started", "Atoms started.", atom, registry=r),
            "succeeded": Counter("zag_atoms_succeeded", "Atoms that succeeded.", atom, registry=r),
            "failed": Counter("zag_atoms_failed", "Atoms that failed.", atom, registry=r),
            "reverted": Counter("zag_atoms_reverted", "Atoms reverted.", atom, registry=r),
            "revert_failed": Counter(
                "zag_atoms_revert_failed", "Atoms whose revert failed.", atom, registry=r
            ),
            "unreverted": Counter(
                "zag_atoms_unreverted",
                "Atoms a failed run left un-reverted (it ended UNCOMPENSATED or STUCK_PAST_PIVOT).",
                atom,
                registry=r,
            ),
            "retries": Counter(
                "zag_retries",
                "Retries: a retry controller restarted its subflow.",
                atom,
                registry=r,
            ),
        }
        self.duration = Histogram(
            "zag_atom_duration_seconds",
            "Duration of atom execute calls.",
            atom,
            buckets=buckets,
            registry=r,
        )
        self.flows = Counter(
            "zag_flows", "Flow runs by how they ended.", ("flow", "state"), registry=r
        )
        self._jobs: dict[str, Counter] = {
            kind: Counter(f"zag_jobs_{kind}", f"Jobs {kind} by conductors.", ("job",), registry=r)
            for kind in _JOB_EVENTS
        }
        self.queue_depth = Gauge(
            "zag_queue_depth", "Requests waiting in a topic's work queue.", ("topic",), registry=r
        )
        self.queue_consumers = Gauge(
            "zag_queue_consumers",
            "Consumers (workers) of a topic's work queue.",
            ("topic",),
            registry=r,
        )
        self.jobs_pending = Gauge(
            "zag_jobs_pending",
            "Jobs posted and not claimed (delayed ones too).",
            ("board",),
            registry=r,
        )
        # (state, flow, atom) -> (counter child, histogram child or None): labels() takes a lock.
        self._series: dict[tuple[str, str, str], tuple[Counter | None, Histogram | None]] = {}
        self._sources: list[Callable[[], Awaitable[None]]] = []

    # -- events ------------------------------------------------------------------------

    def __call__(self, event: Event | ConductorEvent) -> None:
        """Count one engine or conductor event."""
        if isinstance(event, Event):
            if event.kind == "atom":
                key = (event.state, event.flow, event.atom or "")
                series = self._series.get(key)
                if series is None:
                    series = self._series[key] = self._atom_series(*key)
                if series[0] is not None:
                    series[0].inc()
                if series[1] is not None and event.duration is not None:
                    series[1].observe(event.duration)
            elif event.kind == "flow" and event.state in _FLOW_ENDS:
                self.flows.labels(event.flow, event.state).inc()
                for name in (event.details or {}).get("unreverted", ()):
                    self._atoms["unreverted"].labels(event.flow, name).inc()
        elif event.kind in self._jobs:
            self._jobs[event.kind].labels(event.job.name).inc()

    def _atom_series(
        self, state: str, flow: str, atom: str
    ) -> tuple[Counter | None, Histogram | None]:
        counter = _ATOM_COUNTERS.get(state)
        child = self._atoms[counter].labels(flow, atom) if counter else None
        timed = self.duration.labels(flow, atom) if state in ("SUCCESS", "FAILURE") else None
        return child, timed

    # -- gauges ------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def watch_queues(self, url: str, topics: Iterable[str]) -> AsyncIterator[None]:
        """Report the topics' RabbitMQ work queues (`zag.q.<topic>`) while inside.

        `zag_queue_depth` counts requests ready in each queue and
        `zag_queue_consumers` the workers consuming it (0 while the queue does
        not exist). Needs the amqp extra.
        """
        try:
            import aio_pika
        except ImportError as exc:  # pragma: no cover - depends on installed extras
            raise ConfigurationError(
                f"queue metrics need: pip install 'zag-async[amqp]' ({exc})"
            ) from exc
        names = list(topics)
        connection: AbstractConnection | None = None

        async def read() -> None:
            nonlocal connection
            if connection is None or connection.is_closed:
                connection = await aio_pika.connect(url)
            try:
                channel = await connection.channel()
                for topic in names:
                    try:
                        # Passive: look, never create (the workers declare the queue).
                        queue = await channel.declare_queue(f"zag.q.{topic}", passive=True)
                    except aio_pika.exceptions.ChannelClosed:  # no such queue: channel closed
                        depth = consumers = 0
                        channel = await connection.channel()
                    else:
                        result = queue.declaration_result
                        depth = result.message_count or 0
                        consumers = result.consumer_count or 0
                    self.queue_depth.labels(topic).set(depth)
                    self.queue_consumers.labels(topic).set(consumers)
                await channel.close()
            except BaseException:
                # Start over with a fresh connection on the next scrape.
                with contextlib.suppress(Exception):
                    await connection.close()
                connection = None
                raise

        self._sources.append(read)
        try:
            yield
        finally:
            self._sources.remove(read)
            for topic in names:
                with contextlib.suppress(KeyError):
                    self.queue_depth.remove(topic)
                    self.queue_consumers.remove(topic)
            if connection is not None:
                await connection.close()

    @contextlib.asynccontextmanager
    async def watch_board(self, board: JobBoard, *, name: str | None = None) -> AsyncIterator[None]:
        """Report `zag_jobs_pending{board=name}` (default: the board's URL) while inside."""
        label = name or board.url

        async def read() -> None:
            self.jobs_pending.labels(label).set(len(await board.jobs(state=JobState.UNCLAIMED)))

        self._sources.append(read)
        try:
            yield
        finally:
            self._sources.remove(read)
            with contextlib.suppress(KeyError):
                self.jobs_pending.remove(label)

    async def refresh(self) -> None:
        """Read every watched queue and board now; a source that fails keeps its last value."""
        for read in list(self._sources):
            try:
                async with asyncio.timeout(self.refresh_timeout):
                    await read()
            except Exception as exc:
                logger.warning("metrics: a gauge source could not be read: %r", exc)

    # -- exposition --------------------------------------------------------------------

    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        """The current series as (body, content type), in the format `accept` asks for."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type

    def asgi_app(self) -> ASGIApp:
        """An ASGI app serving the series, gauges refreshed per request.

        Mount it in FastAPI or Starlette: `app.mount("/metrics", metrics.asgi_app())`.
        """
        inner = make_asgi_app(self.registry)

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "lifespan":  # served on its own (uvicorn module:app)
                while True:
                    message = await receive()
                    if message["type"] == "lifespan.startup":
                        await send({"type": "lifespan.startup.complete"})
                    elif message["type"] == "lifespan.shutdown":
                        await send({"type": "lifespan.shutdown.complete"})
                        return
            await self.refresh()
            await inner(scope, receive, send)

        return app


@dataclass(frozen=True)
class MetricsServer:
    """Where `serve_metrics` listens."""

    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"


@contextlib.asynccontextmanager
async def serve_metrics(
    metrics: Metrics, *, host: str = "127.0.0.1", port: int = 9464
) -> AsyncIterator[MetricsServer]:
    """Serve `GET /metrics` over HTTP on the running event loop (no thread) while inside.

    `port=0` picks a free port; the yielded `MetricsServer` says which.
    """
    clients: set[asyncio.Task[Any]] = set()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        clients.add(task)
        try:
            await _answer(metrics, reader, writer)
        finally:
            clients.discard(task)

    server = await asyncio.start_server(on_client, host, port)
    try:
        yield MetricsServer(host, server.sockets[0].getsockname()[1])
    finally:
        server.close()
        for task in list(clients):
            task.cancel()
        await asyncio.gather(*clients, return_exceptions=True)
        await server.wait_closed()


async def _answer(
    metrics: Metrics, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """One HTTP/1.1 exchange, then close (scrapers open a connection per scrape)."""
    method = ""
    try:
        async with asyncio.timeout(10):
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        request_line, *lines = head.split("\r\n")
        parts = request_line.split(" ")
        if len(parts) != 3:
            status, content_type, body = "400 Bad Request", "text/plain", b"bad request\n"
        else:
            method, path = parts[0], parts[1].split("?", 1)[0]
            headers = {
                k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)
            }
            if path != "/metrics":
                status, content_type, body = "404 Not Found", "text/plain", b"try /metrics\n"
            elif method not in ("GET", "HEAD"):
                status, content_type, body = "405 Method Not Allowed", "text/plain", b"GET only\n"
            else:
                await metrics.refresh()
                body, content_type = metrics.exposition(headers.get("accept", ""))
                status = "200 OK"
        writer.write(
            (
                f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            ).encode("latin-1")
        )
        if method != "HEAD":
            writer.write(body)
        await writer.drain()
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, TimeoutError):
        pass  # the client went away, or sent no complete request in time
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
