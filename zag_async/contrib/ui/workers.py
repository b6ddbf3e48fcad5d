"""The workers page of the operations UI: live workers and their topics' queues.

Workers say who they are on the discovery fanout (`zag.discovery`): each
announces its topic and tasks with a time to live, answers a ping at once,
and says when it leaves. The UI keeps one listener per app (`Discovery`),
started by the first request to /workers in a task the app owns, so later
requests answer from what it heard. Queue depths come from passive declares
of `zag.q.<topic>` and `zag.dead`. Every broker call is bounded: a broker
that is away makes the page say so, never hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from ...errors import BrokerUnavailable, ConfigurationError
from . import views
from .common import Ui, root

if TYPE_CHECKING:  # the amqp extra is imported when a broker is configured, not before
    from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection

    from ...workers.protocol import Announcement

__all__ = ["Discovery", "routes"]

logger = logging.getLogger("zag_async.ui")

#: The first request waits this long (s) for workers to answer its ping.
FIRST_WAIT = 1.0
#: Bound (s) of connecting and of reading the queues' depths for one page.
BROKER_TIMEOUT = 3.0
#: Seconds between attempts to reach a broker that is away.
RETRY_EVERY = 5.0
#: Workers shown at most; topics whose queues are looked at, at most.
LIMIT = 200

e = views.e


@dataclass
class Seen:
    """A worker as last heard on discovery."""

    name: str
    topic: str
    tasks: frozenset[str]
    last_seen: float  #: wall clock, for the page
    expires: float  #: monotonic: it is live until then


@dataclass(frozen=True)
class Depth:
    """A queue's ready messages and consumers (None: the queue does not exist)."""

    messages: int | None
    consumers: int | None


class Discovery:
    """One UI app's listener on the discovery fanout, holding what workers announce."""

    def __init__(self, url: str) -> None:
        # aliased: main's test_wheel reads the name and a paren as a CSS fetch
        from ...workers.channel import check_url as broker_url_checked

        self.url = broker_url_checked(url)
        self.workers: dict[str, Seen] = {}
        #: topics ever announced (their queues stay worth showing after their workers leave)
        self.topics: set[str] = set()
        self.error: str | None = None
        self.connection: AbstractRobustConnection | None = None
        self.ready = asyncio.Event()  #: set once listening, or once it failed
        self.heard = asyncio.Event()  #: set by each announcement
        self.looked = False  #: the first request's wait for answers is done
        self.task: asyncio.Task[None] | None = None

    def start(self, ui: Ui) -> None:
        """Listen in a task `ui` owns (cancelled by `ui.aclose()`); once."""
        if self.task is not None:
            return
        self.task = asyncio.get_running_loop().create_task(self.run(), name="zag-ui-discovery")
        ui.tasks.add(self.task)
        self.task.add_done_callback(ui.tasks.discard)

    async def run(self) -> None:
        """Listen until cancelled; reconnect every RETRY_EVERY while the broker is away."""
        import aio_pika

        from ...workers.channel import close_connection, redact

        while True:
            try:
                await self._listen()
            except (BrokerUnavailable, aio_pika.exceptions.AMQPError, OSError, TimeoutError) as exc:
                error = str(exc) or type(exc).__name__
                if error != self.error:  # once per cause, not every retry
                    logger.warning("ui: discovery on %s: %s", redact(self.url), error)
                self.error = error
            finally:
                if self.connection is not None:
                    await close_connection(self.connection)
                    self.connection = None
                self.ready.set()
            await asyncio.sleep(RETRY_EVERY)

    async def _listen(self) -> None:
        import aio_pika

        from ...workers import topology
        from ...workers.channel import connect, redact
        from ...workers.protocol import Ping

        async with asyncio.timeout(BROKER_TIMEOUT):  # tighter than connect's own bound
            self.connection = await connect(self.url)
        async with asyncio.timeout(BROKER_TIMEOUT):
            channel = await self.connection.channel()
            discovery = await channel.declare_exchange(
                topology.DISCOVERY, aio_pika.ExchangeType.FANOUT, durable=False
            )
            queue = await channel.declare_queue(exclusive=True, auto_delete=True)
            await queue.bind(discovery)
            await queue.consume(self._on_message, no_ack=True)
            await discovery.publish(aio_pika.Message(Ping().dumps()), routing_key="")
        self.error = None
        self.ready.set()
        closed = asyncio.Event()
        self.connection.close_callbacks.add(lambda *_: closed.set())
        await closed.wait()  # a robust connection reconnects by itself until closed
        raise BrokerUnavailable(f"the connection to {redact(self.url)} was closed")

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        from ...workers.protocol import Announcement, MessageError, load_discovery

        try:
            word = load_discovery(message.body)
        except MessageError as exc:
            logger.debug("ui: ignoring a discovery message: %s", exc)
            return
        if isinstance(word, Announcement):
            self.hear(word)

    def hear(self, word: Announcement) -> None:
        """Take in one announcement (or a worker's leaving)."""
        if word.leaving:
            self.workers.pop(word.worker, None)
            return
        self.topics.add(word.topic)
        self.workers[word.worker] = Seen(
            word.worker, word.topic, word.tasks, time.time(), time.monotonic() + word.ttl
        )
        self.heard.set()

    def live(self) -> list[Seen]:
        """Workers whose last announcement has not expired, by topic then name."""
        now = time.monotonic()
        for name in [n for n, s in self.workers.items() if s.expires <= now]:
            del self.workers[name]
        return sorted(self.workers.values(), key=lambda s: (s.topic, s.name))

    async def first_look(self) -> None:
        """Wait (bounded) until listening and, the first time, for the ping's answers."""
        async with asyncio.timeout(BROKER_TIMEOUT + FIRST_WAIT + 1):
            await self.ready.wait()
        if self.error is None and not self.looked:
            self.looked = True
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FIRST_WAIT):
                    await self.heard.wait()
                    await asyncio.sleep(0.2)  # the other workers answer about as fast

    async def depths(self, topics: list[str]) -> dict[str, Depth]:
        """Each queue's depth and consumers by passive declare (a missing queue closes
        the channel it was asked on, so each gets a new one when needed)."""
        import aio_pika

        out: dict[str, Depth] = {}
        connection = self.connection
        if connection is None:
            return out
        channel: AbstractChannel | None = None
        try:
            async with asyncio.timeout(BROKER_TIMEOUT):
                for name in topics:
                    if channel is None or channel.is_closed:
                        channel = await connection.channel()
                    try:
                        queue = await channel.declare_queue(name, passive=True)
                    except aio_pika.exceptions.ChannelClosed:
                        out[name] = Depth(None, None)
                        channel = None
                        continue
                    result = queue.declaration_result
                    out[name] = Depth(result.message_count, result.consumer_count)
        finally:
            if channel is not None and not channel.is_closed:
                with contextlib.suppress(Exception):
                    await channel.close()
        return out


# -- HTML ---------------------------------------------------------------------------


def _count(value: int | None) -> str:
    return "no such queue" if value is None else str(value)


def render(prefix: str, seen: Discovery, depths: dict[str, Depth], problem: str) -> str:
    """The workers page: live workers, then each topic's queue and the dead letters."""
    from ...workers import topology
    from ...workers.channel import redact

    now = time.time()
    live = seen.live()
    rows = "".join(
        f"<tr><td>{e(w.name)}</td><td>{e(w.topic)}</td>"
        f"<td>{e(', '.join(sorted(w.tasks)))}</td>"
        f"<td>{e(f'{max(now - w.last_seen, 0):.0f} s ago')}</td></tr>"
        for w in live[:LIMIT]
    )
    workers = (
        '<table class="workers"><caption>Live workers</caption><thead><tr>'
        '<th scope="col">Worker</th><th scope="col">Topic</th><th scope="col">Tasks</th>'
        f'<th scope="col">Last seen</th></tr></thead><tbody>{rows}</tbody></table>'
        if live
        else '<p class="empty">No live worker announced itself.</p>'
    )
    if len(live) > LIMIT:
        workers += f'<p class="notice">Showing the first {LIMIT} workers only.</p>'
    serving: dict[str, int] = {}
    for w in live:
        serving[w.topic] = serving.get(w.topic, 0) + 1
    queue_rows = []
    for name, depth in depths.items():
        dead = name == topology.DEAD
        topic = "(dead letters)" if dead else name.removeprefix("zag.q.")
        workers_on = "" if dead else str(serving.get(topic, 0))
        queue_rows.append(
            f"<tr><td>{e(topic)}</td><td><code>{e(name)}</code></td>"
            f'<td class="depth">{e(_count(depth.messages))}</td>'
            f"<td>{e(_count(depth.consumers))}</td><td>{workers_on}</td></tr>"
        )
    queues = (
        '<table class="queues"><caption>Topics and queues</caption><thead><tr>'
        '<th scope="col">Topic</th><th scope="col">Queue</th><th scope="col">Ready messages</th>'
        '<th scope="col">Consumers</th><th scope="col">Live workers</th></tr></thead>'
        f"<tbody>{''.join(queue_rows)}</tbody></table>"
        if queue_rows
        else ""
    )
    shown = f'<p class="notice" role="alert">{e(problem)}</p>' if problem else ""
    body = (
        f"<h1>Workers</h1>{shown}<p>Broker: <code>{e(redact(seen.url))}</code></p>"
        f"<h2>Live workers</h2>{workers}<h2>Topics</h2>{queues}"
    )
    return views.page(prefix, "Workers", body)


# -- routes -------------------------------------------------------------------------


def routes(ui: Ui) -> list[Route]:
    """GET /workers (one discovery listener per app, started by the first request)."""
    found: list[Discovery] = []

    async def workers_page(request: Request) -> Response:
        prefix = root(request)
        if ui.broker is None:
            body = (
                "<h1>Workers</h1><p>No broker is configured: start the UI with --broker "
                "amqp://... (or asgi_app(..., broker=...)) to see workers and queues.</p>"
            )
            return HTMLResponse(views.page(prefix, "Workers", body))
        if not found:
            try:
                found.append(Discovery(ui.broker))
            except ImportError as exc:
                body = (
                    "<h1>Workers</h1><p>The workers page needs the amqp extra: "
                    f"pip install 'zag-async[amqp]' ({e(exc)})</p>"
                )
                return HTMLResponse(views.page(prefix, "Workers", body))
            except ConfigurationError as exc:
                body = f"<h1>Workers</h1><p>{e(exc)}</p>"
                return HTMLResponse(views.page(prefix, "Workers", body))
        import aio_pika

        from ...workers import topology

        seen = found[0]
        seen.start(ui)
        problem = ""
        depths: dict[str, Depth] = {}
        try:
            await seen.first_look()
        except TimeoutError:
            problem = "The broker did not answer in time."
        if seen.error is not None:
            problem = f"The broker is unreachable: {seen.error}"
        elif not problem:
            names = [topology.topic_queue(t) for t in sorted(seen.topics)[:LIMIT]]
            try:
                depths = await seen.depths([*names, topology.DEAD])
            except (TimeoutError, aio_pika.exceptions.AMQPError, OSError) as exc:
                why = str(exc) or f"no answer within {BROKER_TIMEOUT:g} s"
                problem = f"Could not read the queues from the broker: {why}"
        return HTMLResponse(render(prefix, seen, depths, problem))

    return [Route("/workers", workers_page)]
