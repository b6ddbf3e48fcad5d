"""The engine's event bus: listeners, trace hooks, and the order events arrive in.

Sync listeners are called as events happen; async listeners are awaited one
event at a time, in order, by a pump that lives for the whole run inside the
run's task group, so a slow listener delays its own events, never the flow.
A listener that raises is logged and skipped: observers must not break a flow.
Trace hooks (`TraceHook`) are listeners that also wrap runs and atom calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Literal, Protocol, TypeGuard, runtime_checkable

from .events import Event, Listener
from .failure import Failure

if TYPE_CHECKING:
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

    from .engine import Engine

__all__ = ["EventBus", "TraceHook"]

logger = logging.getLogger("zag_async")


@runtime_checkable
class TraceHook(Protocol):
    """A listener that also wraps runs and atom calls (`zag_async.telemetry.Tracing`).

    The engine enters `flow_scope` around each `run()` and `atom_scope` around
    each execute or revert, in the task that makes the call, so what a scope
    makes current (a span) is current for the task's code and its executor.
    `atom_scope` yields a function the engine calls with the call's failure
    (None on success) before leaving the scope. Without such a listener the
    engine does none of this.
    """

    def flow_scope(self, engine: Engine) -> contextlib.AbstractContextManager[object]: ...

    def atom_scope(
        self, engine: Engine, atom: str, action: Literal["execute", "revert"], attempt: int
    ) -> contextlib.AbstractContextManager[Callable[[Failure | None], object]]: ...


class EventBus:
    """Delivers one engine's events to its listeners."""

    def __init__(self, listeners: Iterable[Listener] = ()) -> None:
        self._listeners: list[Listener] = list(listeners)
        self._sync: tuple[Listener, ...] = ()
        self._async: tuple[Listener, ...] = ()
        #: True when some listener is attached (events are worth building); a plain
        #: attribute because the scheduler reads it on every state change.
        self.wanted = False
        if self._listeners:
            self._sort()
        self._send: MemoryObjectSendStream[Event] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None

    @property
    def listeners(self) -> tuple[Listener, ...]:
        return tuple(self._listeners)

    def hooks(self) -> list[TraceHook]:
        """The attached listeners that are trace hooks."""
        return [x for x in self._listeners if _is_hook(x)]

    def add(self, listener: Listener) -> Callable[[], None]:
        """Attach a listener; returns a function that detaches it."""
        self._listeners.append(listener)
        self._sort()

        def detach() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)
                self._sort()

        return detach

    def _sort(self) -> None:
        """Split listeners into sync and async once, not on every event."""
        self._sync = tuple(x for x in self._listeners if not _is_async(x))
        self._async = tuple(x for x in self._listeners if _is_async(x))
        self.wanted = bool(self._listeners)

    def emit(self, event: Event) -> None:
        """Deliver an event: sync listeners now, async ones through the pump.

        Safe to call from a task's worker thread (`zag.progress()` in a sync
        task): the event is handed to the loop's thread first.
        """
        loop = self._loop
        if loop is not None and threading.get_ident() != self._loop_thread:
            loop.call_soon_threadsafe(self.emit, event)
            return
        if self._send is not None and self._async:
            self._send.send_nowait(event)
        for listener in self._sync:
            try:
                listener(event)
            except Exception:  # a broken listener must not break the flow
                logger.exception("listener %r failed on %s", listener, event)

    def bind(self) -> None:
        """Note the running loop and its thread: events emitted from other threads
        (a sync task's `progress()`) are handed to it."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Deliver events to async listeners for the whole block, its last events included.

        Events emitted before the block ends (the flow's final state, a
        suspension on cancel) all reach async listeners before it returns.
        """
        self.bind()
        if not self._async:
            yield
            return
        import anyio  # only runs with async listeners pay for importing its streams

        send, receive = anyio.create_memory_object_stream[Event](max_buffer_size=float("inf"))
        self._send = send
        error: BaseException | None = None
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._pump(receive))
            try:
                yield
            except BaseException as exc:
                # Raised into the task group it would cancel the pump and drop the
                # last events (a cancelled run's SUSPENDED); let it drain first.
                error = exc
            finally:
                self._send = None
                send.close()
        if error is not None:
            raise error

    async def _pump(self, receive: MemoryObjectReceiveStream[Event]) -> None:
        """Await async listeners one event at a time, in order."""
        async with receive:
            async for event in receive:
                for listener in self._async:
                    try:
                        res = listener(event)
                        if inspect.isawaitable(res):
                            await res
                    except Exception:
                        logger.exception("listener %r failed on %s", listener, event)


def _is_hook(listener: object) -> TypeGuard[TraceHook]:
    return isinstance(listener, TraceHook)


def _is_async(listener: Listener) -> bool:
    call = getattr(type(listener), "__call__", None)  # noqa: B004
    return inspect.iscoroutinefunction(listener) or inspect.iscoroutinefunction(call)


async def events_of_run(
    run: Callable[[], Awaitable[object]], add_listener: Callable[[Listener], Callable[[], None]]
) -> AsyncIterator[Event]:
    """Start `run()` and yield every event it emits; raise what it raised at the end.

    The run is a plain task, not a task group's: an async generator cannot own
    a task group across its yields (its consumer may stop iterating at any
    point, or close it from another task). The finally block owns it.
    """
    queue: asyncio.Queue[Event] = asyncio.Queue()
    detach = add_listener(queue.put_nowait)
    runner = asyncio.ensure_future(run())
    try:
        while True:
            if queue.empty() and runner.done():
                break
            getter = asyncio.ensure_future(queue.get())
            await asyncio.wait({getter, runner}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                yield getter.result()
            else:
                getter.cancel()
        runner.result()
    finally:
        detach()
        if not runner.done():
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await runner
