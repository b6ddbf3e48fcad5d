"""What a worker does with one request, whatever carried it there.

The AMQP `Worker` and the in-process `LoopbackExecutor` both hand a request's
bytes to `RequestHandler.handle`, which decodes and checks it, runs the task
through `zag_async.execution.invoke` (the one way a step is called, locally
or remotely), sends heartbeats and progress while it runs, and returns the
final `Response` with what to do with the request afterwards. Transport
chores (acks, dead-lettering, retried publishes) stay with the caller.

`handle` never raises (short of cancellation): a request it cannot decode is
rejected with the reason and dead-lettered, and anything unexpected while it
runs becomes the request's failure, so the caller can always settle the
delivery and free its slot.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..atom import Atom
from ..codec import Codec, as_declared
from ..errors import ConfigurationError, ExecutionError
from ..events import Event, reporting
from ..execution import invoke
from ..failure import Failure
from .protocol import MessageError, Request, Response, task_key
from .tracing import TracingHooks

__all__ = ["FIRST_BEAT", "Outcome", "RequestHandler", "Send", "by_task_key", "delivery_count"]

#: Sends one response to the engine that made the request.
Send = Callable[[Response], Awaitable[None]]
#: Seconds a request runs before its first heartbeat (then one every `heartbeat` s).
FIRST_BEAT = 0.02


@dataclass(frozen=True)
class Outcome:
    """How a request ended: the final response, and whether to park the request.

    Attributes:
        response: the engine's answer (None when the request named no id to answer).
        dead_letter: why the request must go to the dead letters instead of
            being acknowledged as served (None: it was served).
        hand_back: the request is for a task this worker lacks and another live
            worker on the topic has: put it back on the topic for that one
            (response and dead_letter are then None).
    """

    response: Response | None
    dead_letter: str | None = None
    hand_back: bool = False


class RequestHandler:
    """Runs requests for a worker's tasks.

    Args:
        tasks: the atoms served, by task key.
        worker: the worker's name, put on every response.
        topic: the topic served (named in rejections).
        codec: how arguments and results travel.
        heartbeat: seconds between heartbeats while a request runs.
        delivery_limit: deliveries of one request before it counts as poison.
        tracing: trace hooks, or None.
        served_elsewhere: whether another live worker on the topic has a task
            (by key); None when there are no other workers (loopback).
    """

    def __init__(
        self,
        tasks: Mapping[str, Atom],
        *,
        worker: str,
        topic: str,
        codec: Codec,
        heartbeat: float,
        delivery_limit: int,
        tracing: TracingHooks | None = None,
        served_elsewhere: Callable[[str], bool] | None = None,
    ) -> None:
        self.served_elsewhere = served_elsewhere
        self.tasks = tasks
        self.worker = worker
        self.topic = topic
        self.codec = codec
        self.heartbeat = heartbeat
        self.delivery_limit = delivery_limit
        self.tracing = tracing

    async def handle(
        self,
        body: bytes,
        *,
        correlation_id: str,
        headers: Mapping[str, Any],
        deliveries: int,
        send: Send,
    ) -> Outcome:
        """Decode, check and run one request; `send` carries heartbeats and progress.

        Args:
            body: the request as it travelled.
            correlation_id: the request id the transport saw (for a body too
                broken to name its own).
            headers: the transport's headers (trace context).
            deliveries: how often the request was delivered before.
            send: where heartbeats and progress go (best effort: errors are ignored).
        """
        try:
            request = Request.loads(body, self.codec)
        except Exception as exc:  # MessageError; anything else is a bug, refused all the same
            why = str(exc) if isinstance(exc, MessageError) else f"cannot be read ({exc!r})"
            reason = f"malformed request: {why}"
            rejected = Response(correlation_id, "rejected", self.worker, reason=reason)
            return Outcome(rejected if correlation_id else None, reason)
        try:
            return await self._serve(request, headers, deliveries, send)
        except Exception as exc:  # not the task's failure (invoke captures that): ours
            failure = Failure.from_exception(
                ExecutionError(f"worker {self.worker} could not run request {request.id}: {exc!r}")
            )
            return Outcome(Response(request.id, "failure", self.worker, failure=failure))

    async def _serve(
        self, request: Request, headers: Mapping[str, Any], deliveries: int, send: Send
    ) -> Outcome:
        atom = self.tasks.get(request.task)
        elsewhere = self.served_elsewhere
        if atom is None and elsewhere is not None and elsewhere(request.task):
            return Outcome(None, hand_back=True)
        if atom is None:
            reason = f"worker {self.worker} on topic {self.topic!r} has no task {request.task!r}"
            if self.served_elsewhere is not None:
                reason += ", nor has any other live worker on that topic"
            return Outcome(Response(request.id, "rejected", self.worker, reason=reason), reason)
        if deliveries >= self.delivery_limit - 1:
            reason = (
                f"request for {request.task!r} (atom {request.atom!r}) was delivered "
                f"{deliveries + 1} times: its workers keep dying on it (poison message)"
            )
            failure = Failure.from_exception(ExecutionError(reason))
            return Outcome(Response(request.id, "failure", self.worker, failure=failure), reason)
        # No "started" message: a short task answers with its outcome alone (one
        # broker round trip less); a long one is announced by its heartbeats.
        # The first beat comes early (a task still running after FIRST_BEAT s is
        # worth announcing, so the engine can tell if its worker dies), then
        # steady. A timer starts the beating task only then: most requests end
        # sooner and cost no task, no event and no wake-up for it.
        done = asyncio.Event()
        async with asyncio.TaskGroup() as news:  # heartbeats and progress reports

            def beat() -> None:
                news.create_task(self._heartbeats(request.id, send, done))

            timer = asyncio.get_running_loop().call_later(min(self.heartbeat, FIRST_BEAT), beat)
            try:
                if self.tracing is None:
                    response = await self._run(atom, request, news, send)
                else:  # run it in a span continuing the engine's trace
                    with self.tracing.remote_span(request, headers, self.worker) as record:
                        response = await self._run(atom, request, news, send)
                        record(response)
            finally:
                timer.cancel()
                done.set()
        return Outcome(response)

    async def _heartbeats(self, rid: str, send: Send, done: asyncio.Event) -> None:
        """Beat now, then every `heartbeat` s, until `done` (checked between beats,
        so a beat being published is never cut off halfway)."""
        while not done.is_set():
            await _quietly(send(Response(rid, "heartbeat", self.worker)))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.heartbeat):
                    await done.wait()

    async def _run(
        self, atom: Atom, request: Request, news: asyncio.TaskGroup, send: Send
    ) -> Response:
        loop = asyncio.get_running_loop()

        def emit(event: Event) -> None:
            # Called from the task's code: on this loop, or in its worker thread.
            if event.kind != "progress" or event.progress is None:
                return
            response = Response(request.id, "progress", self.worker, progress=event.progress)
            try:
                here = asyncio.get_running_loop()
            except RuntimeError:
                here = None
            if here is loop:
                news.create_task(_quietly(send(response)))
            else:
                loop.call_soon_threadsafe(lambda: news.create_task(_quietly(send(response))))

        name = request.atom or request.task
        with reporting(emit, request.flow, request.atom):
            try:
                if request.action == "execute":
                    fn = atom.execute_fn or atom.execute
                    is_async = atom.execute_async
                else:
                    revert = atom.revert_fn
                    if revert is None:
                        return Response(request.id, "result", self.worker, result=None)
                    fn, is_async = revert, atom.revert_async
                value = await invoke(
                    fn,
                    as_declared(fn, request.args, atom=name),
                    is_async=is_async,
                    name=name,
                    time_limit=request.timeout or None,
                )
                self.codec.dumps(value)  # fail here, as a task failure, if it cannot travel
                return Response(request.id, "result", self.worker, result=value)
            except Exception as exc:
                failure = Failure.from_exception(exc)
                return Response(request.id, "failure", self.worker, failure=failure)


async def _quietly(sending: Awaitable[None]) -> None:
    """News is best effort: the outcome, sent later, is what counts."""
    with contextlib.suppress(Exception):
        await sending


def delivery_count(headers: Mapping[str, Any]) -> int:
    """How often the broker delivered a message before (RabbitMQ's x-delivery-count)."""
    count = headers.get("x-delivery-count", 0)
    if isinstance(count, str) and count.strip().isdigit():
        return int(count)
    return count if isinstance(count, int) and not isinstance(count, bool) and count >= 0 else 0


def by_task_key(tasks: Iterable[Atom], owner: str) -> dict[str, Atom]:
    """The atoms `owner` serves, by task key; ConfigurationError for anything else."""
    served: dict[str, Atom] = {}
    for atom in tasks:
        if not isinstance(atom, Atom):
            raise ConfigurationError(
                f"{owner} tasks must be atoms (@zag.task or zag.Task), got {atom!r}"
            )
        served[task_key(atom)] = atom
    return served
