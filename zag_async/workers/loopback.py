"""`LoopbackExecutor`: remote semantics in one process, without a broker.

Every call is encoded as the same `Request` bytes a `RemoteExecutor` would
publish, served by the same `RequestHandler` a `Worker` uses, and answered
with `Response` bytes decoded as the engine side decodes them. So arguments
and results go through the codec (a result that cannot travel fails the
task), failures come back as `RemoteFailure`, progress arrives as progress
events, unknown tasks are rejected, and time limits end the call on the
"worker" side, all in milliseconds: a test double that speaks the wire
protocol, for testing flows meant for remote workers.

    executor = zag.workers.LoopbackExecutor(tasks=[resize, encode])
    await zag.Engine(flow, executor=executor).run()
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable
from typing import Any

from ..atom import Atom
from ..codec import Codec, JsonCodec
from ..events import Event, current_atom
from .protocol import Request, Response, task_key
from .serving import RequestHandler, by_task_key
from .tracing import TracingHooks

__all__ = ["LoopbackExecutor"]


class LoopbackExecutor:
    """Runs tasks in this process through the remote workers' wire protocol.

    Args:
        tasks: the atoms its in-process worker serves (others are rejected,
            as a worker without them would).
        codec: how arguments and results travel (default: JSON).
        heartbeat: seconds between heartbeats while a request runs.
        tracing: trace hooks, or None (the context travels in headers, as remotely).
        name: the in-process worker's name.
    """

    def __init__(
        self,
        *,
        tasks: Iterable[Atom],
        codec: Codec | None = None,
        heartbeat: float = 1.0,
        tracing: TracingHooks | None = None,
        name: str = "loopback",
    ) -> None:
        served = by_task_key(tasks, "loopback")
        self.codec = codec or JsonCodec()
        self.tracing = tracing
        self.handler = RequestHandler(
            served,
            worker=name,
            topic="loopback",
            codec=self.codec,
            heartbeat=heartbeat,
            delivery_limit=2**31,
            tracing=tracing,
        )
        #: Responses seen, by kind (heartbeats and progress included), for tests.
        self.seen: dict[str, int] = {}

    async def execute(
        self,
        atom: Atom,
        name: str,
        flow: str,
        kwargs: dict[str, Any],
        *,
        time_limit: float | None,
        delay: float,
    ) -> Any:
        if delay > 0:
            await asyncio.sleep(delay)  # what the broker's delay queue does
        return await self._request(atom, name, flow, "execute", kwargs, time_limit)

    async def revert(self, atom: Atom, name: str, flow: str, kwargs: dict[str, Any]) -> Any:
        return await self._request(atom, name, flow, "revert", kwargs, None)

    async def before_retry(self, delay: float) -> float:
        """As remotely: the guarded requests carry the delay (and `execute` waits it)."""
        return delay

    async def _request(
        self,
        atom: Atom,
        name: str,
        flow: str,
        action: str,
        kwargs: dict[str, Any],
        time_limit: float | None,
    ) -> Any:
        rid = uuid.uuid4().hex
        body = Request(
            rid, task_key(atom), action, dict(kwargs), atom=name, flow=flow, timeout=time_limit
        ).dumps(self.codec)
        headers: dict[str, Any] = {}
        if self.tracing is not None:
            self.tracing.inject(headers)
        current = current_atom.get()
        emit = current[0] if current else None

        async def send(response: Response) -> None:
            news = self._travel(response)
            if news.kind == "progress" and emit is not None and news.progress is not None:
                emit(Event("progress", flow, "RUNNING", name, progress=news.progress))

        outcome = await self.handler.handle(
            body, correlation_id=rid, headers=headers, deliveries=0, send=send
        )
        assert outcome.response is not None  # the request was well formed and had an id
        return self._travel(outcome.response).outcome(name)

    def _travel(self, response: Response) -> Response:
        """The response as the engine side receives it: encoded, then decoded."""
        self.seen[response.kind] = self.seen.get(response.kind, 0) + 1
        return Response.loads(response.dumps(self.codec), self.codec)
