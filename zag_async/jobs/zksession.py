"""A ZooKeeper session we can trust, on top of aiozk.

aiozk (0.32, against ZooKeeper 3.8) blocks every call without error while the
server is down, fails calls in flight on a dying connection even when the
session survives, opens a new session silently when the old one expired, and
does not re-register delete-only watches after a reconnect. So here:

- every call has a deadline and a bounded number of attempts, then raises
  `BoardUnavailable`;
- a monitor follows the connection: after `session_timeout` without a
  connection, or on reconnecting with a different session id, the session is
  declared *lost* and every `on_lost` callback runs (claims and locks taken
  under it are gone: their holders must stop);
- every reconnect bumps `generation` and wakes `event_or_reconnect()`
  waiters, so watch loops re-read (and so re-arm) their watches themselves.

The monitor runs in the session's own `Background` task group; call retries and
the server search pause on `Backoff` schedules.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiozk
from aiozk import exc as zk_exc
from aiozk.states import States

from ..background import Background
from ..backoff import Backoff
from ..errors import BoardUnavailable, ConfigurationError

__all__ = ["ZkSession", "server_addresses"]

logger = logging.getLogger("zag_async.jobs")

T = TypeVar("T")

#: Errors that say something about the data, not the connection: never retried.
SEMANTIC = (zk_exc.NoNode, zk_exc.NodeExists, zk_exc.NotEmpty, zk_exc.BadVersion)
#: Errors that mean "could not talk to the server (this time)".
TRANSIENT = (
    TimeoutError,
    zk_exc.TimeoutError,
    zk_exc.ConnectError,
    zk_exc.SessionLost,
    zk_exc.FailedRetry,
    zk_exc.ConnectionLoss,
    zk_exc.SessionExpired,
    zk_exc.OperationTimeout,
    zk_exc.UnfinishedRead,
    zk_exc.NoServersError,
    ConnectionError,
    OSError,
)


def server_addresses(servers: str) -> list[tuple[str, int]]:
    """`host[:port][,host[:port]]` as (host, port) pairs (port 2181 by default);
    ConfigurationError at once when malformed, rather than a reconnect loop."""
    addresses = []
    for item in servers.split(","):
        host, colon, port = item.strip().rpartition(":") if ":" in item else (item, "", "2181")
        host = host.strip("[]")
        if not host or (colon and not port.isdigit()) or not 0 < int(port or 0) < 65536:
            raise ConfigurationError(
                f"ZooKeeper servers must be host:port[,host:port], got {servers!r}"
            )
        addresses.append((host, int(port)))
    return addresses


async def unreachable(addresses: list[tuple[str, int]], within: float) -> str | None:
    """None when some server accepts a TCP connection within `within` seconds; else
    why none did. aiozk retries a refused server silently until the start deadline,
    so a wrong port said only "TimeoutError" after 15 s; this says why at once."""

    async def probe(host: str, port: int) -> str | None:
        try:
            async with asyncio.timeout(within):
                _, writer = await asyncio.open_connection(host, port)
        except TimeoutError:
            return f"{host}:{port} did not answer within {within:g}s"
        except ConnectionRefusedError:
            return f"{host}:{port}: connection refused (is ZooKeeper running there?)"
        except OSError as exc:
            return f"{host}:{port}: {exc}"
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return None

    reasons = await asyncio.gather(*(probe(host, port) for host, port in addresses))
    if any(reason is None for reason in reasons):
        return None
    return "; ".join(reason for reason in reasons if reason)


#: Pauses between rounds of the server search (no bound: the session waits for a server).
SEARCH_BACKOFF = Backoff(first=0.1, factor=2.0, cap=1.0)


async def find_server(session: Any, allow_read_only: bool) -> None:
    """aiozk's Session.find_server with short, bounded pauses between attempts."""
    conn = None
    async for _attempt in SEARCH_BACKOFF.attempts():
        conn = await _probe_servers(session, allow_read_only)
        if conn is not None:
            break
    old, session.conn = session.conn, conn
    if old is not None:
        with contextlib.suppress(Exception):
            await old.close(session.timeout)


async def _probe_servers(session: Any, allow_read_only: bool) -> Any:
    """One round over the servers in random order: the first usable connection, or None."""
    # aiozk's handshake reads the answer to 'srvr' without a deadline: a server that
    # accepts but does not answer (still starting, overloaded) held the repair loop
    # forever, so the session never came back. Bound each attempt.
    limit = min(max(float(session.timeout or 0), 1.0), 5.0)
    for host, port in random.sample(session.hosts, len(session.hosts)):
        try:
            async with asyncio.timeout(limit):
                conn = await session.make_connection(host, port)
        except TimeoutError:
            logger.warning("ZooKeeper at %s:%s did not answer within %gs", host, port, limit)
            continue
        if conn is None:
            continue
        if conn.start_read_only and not allow_read_only:
            await conn.close(session.timeout)
            continue
        return conn
    return None


class ZkSession:
    """One aiozk client with deadlines, bounded retries and loss detection."""

    def __init__(
        self,
        servers: str,
        chroot: str,
        *,
        session_timeout: float = 10.0,
        call_timeout: float = 5.0,
        attempts: int = 3,
        url: str | None = None,
    ) -> None:
        self.servers = servers
        self.addresses = server_addresses(servers)
        self.name = url or servers  #: how errors name the board
        self.chroot = chroot
        self.session_timeout = session_timeout
        self.call_timeout = call_timeout
        self.attempts = attempts
        self.client: Any = None
        self.generation = 0  #: bumped at every (re)connection
        self.lost_count = 0  #: bumped every time the session is declared lost
        self.on_lost: list[Callable[[], None]] = []
        self._retry = Backoff(first=0.1, factor=2.0, cap=1.0, max_attempts=attempts)
        self._session_id: int | None = None
        self._wake_on_reconnect: set[asyncio.Event] = set()
        self._tasks = Background("zag-zk-session")
        self._lost_timer: asyncio.TimerHandle | None = None
        self._declared_lost = False
        self._closed = False

    async def start(self) -> None:
        why = await unreachable(self.addresses, self.call_timeout)
        if why is not None:
            raise BoardUnavailable(f"cannot reach ZooKeeper for {self.name}: {why}")
        self.client = aiozk.ZKClient(
            self.servers,
            chroot=self.chroot or None,
            session_timeout=self.session_timeout,
            retry_policy=aiozk.RetryPolicy.forever(),
        )
        try:
            async with asyncio.timeout(self.call_timeout + self.session_timeout):
                await self.client.start()
        except BaseException as exc:
            await self._close_client()
            if isinstance(exc, (TimeoutError, *TRANSIENT)):
                raise BoardUnavailable(f"cannot reach ZooKeeper for {self.name}: {exc!r}") from exc
            raise
        self._session_id = self.client.session.session_id
        # aiozk backs off 2, 4, 8 ... 60 s between reconnect attempts, so a server
        # back after one second was only found seconds later and sessions expired
        # for nothing: look for a server every 0.1 to 1 s instead.
        self.client.session.find_server = functools.partial(find_server, self.client.session)
        await self._tasks.start()
        self._tasks.spawn(self._follow(), name="zag-zk-monitor")

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._lost_timer is not None:
            self._lost_timer.cancel()
        try:
            await self._tasks.aclose()
        finally:
            await self._close_client()

    async def _close_client(self) -> None:
        if self.client is None:
            return
        client, self.client = self.client, None
        with contextlib.suppress(Exception, asyncio.CancelledError):
            async with asyncio.timeout(self.call_timeout):
                await client.close()

    @property
    def c(self) -> Any:
        """The aiozk client; BoardUnavailable once the session is closed."""
        if self._closed or self.client is None:
            raise BoardUnavailable(f"ZooKeeper session to {self.servers} is closed")
        return self.client

    @property
    def closed(self) -> bool:
        """True once `aclose()` was called."""
        return self._closed

    @property
    def session_id(self) -> int | None:
        return self._session_id

    @property
    def connected(self) -> bool:
        return self.client is not None and self.client.session.state == States.CONNECTED

    # -- calls -------------------------------------------------------------------

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """Run one aiozk call with a deadline; retry connection trouble a few times."""
        if self._closed or self.client is None:
            raise BoardUnavailable("ZooKeeper session is closed")
        last: BaseException | None = None
        cache = self.client.stat_cache
        if len(cache) > 10_000:
            # aiozk remembers the stat of every path ever touched; we never use it.
            cache.clear()
        async for attempt in self._retry.attempts():
            try:
                async with asyncio.timeout(self.call_timeout):
                    return await fn(*args, **kwargs)
            except SEMANTIC:
                raise
            except TRANSIENT as exc:
                last = exc
                if attempt.last:
                    break
        name = getattr(fn, "__name__", "call")
        raise BoardUnavailable(
            f"ZooKeeper at {self.servers}: {name} failed {self.attempts} times "
            f"within {self.call_timeout:g}s each: {last!r}"
        ) from last

    async def event_or_reconnect(
        self, event: asyncio.Event, generation: int, within: float | None = None
    ) -> None:
        """Wait until `event` is set or the connection was re-established after `generation`
        (or `within` seconds passed: for retrying what no watch will announce).

        A reconnect meanwhile sets `event` itself (callers clear it before re-reading),
        so there is one thing to wait for and no helper task.
        """
        self._wake_on_reconnect.add(event)
        try:
            if self.generation != generation or self._closed:
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(within):
                    await event.wait()
        finally:
            self._wake_on_reconnect.discard(event)

    def watch(
        self, event_types: list[int], path: str, callback: Callable[[Any], None]
    ) -> Callable[[], None]:
        """Call `callback` on the given watch events for `path`; returns a remover.

        The callback stays registered (aiozk re-sends it on reconnect); the
        caller re-reads with `watch=True` after each event or reconnect.
        """
        full = self.client.normalize_path(path)
        session = self.client.session
        for event_type in event_types:
            session.add_watch_callback(event_type, full, callback)

        def remove() -> None:
            for event_type in event_types:
                with contextlib.suppress(KeyError):
                    session.remove_watch_callback(event_type, full, callback)

        return remove

    # -- following the connection ----------------------------------------------------

    async def _follow(self) -> None:
        state = self.client.session.state
        loop = asyncio.get_running_loop()
        while not self._closed:
            await state.wait_for(States.SUSPENDED, States.LOST)
            logger.warning("ZooKeeper connection to %s interrupted", self.servers)
            if self._lost_timer is None and not self._declared_lost:
                self._lost_timer = loop.call_later(
                    self.session_timeout, self.declare_lost, "timed out"
                )
            await state.wait_for(States.CONNECTED, States.READ_ONLY)
            if self._lost_timer is not None:
                self._lost_timer.cancel()
                self._lost_timer = None
            new_id = self.client.session.session_id
            if new_id != self._session_id:
                self.declare_lost("expired")
                self._session_id = new_id
            self._declared_lost = False
            self.generation += 1
            for event in list(self._wake_on_reconnect):
                event.set()
            logger.warning("ZooKeeper connection to %s re-established", self.servers)

    def declare_lost(self, why: str) -> None:
        """Declare the session lost (`why` is logged): every `on_lost` callback runs.

        The monitor calls this after `session_timeout` without a connection or on
        a changed session id; tests call it to drive the loss path directly.
        """
        self._lost_timer = None
        if self._declared_lost:
            return
        self._declared_lost = True
        self.lost_count += 1
        logger.error(
            "ZooKeeper session to %s %s: claims and locks held are lost", self.servers, why
        )
        for callback in list(self.on_lost):
            try:
                callback()
            except Exception:
                logger.exception("session-lost callback %r failed", callback)
