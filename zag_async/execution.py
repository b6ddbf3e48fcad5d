"""Where an atom's code runs: the executor seam and the one way to call a step.

The engine decides *what* runs; an executor decides *where*. Both the
in-process `LocalExecutor` and a remote worker call a user's function through
`invoke`, so a step behaves the same wherever it lands: coroutines are awaited,
plain functions run in a worker thread with the caller's context variables,
and a time limit ends the call with `AtomTimeout`.

Retry delays belong to the executor too. Before a retry controller runs its
guarded atoms again, the engine asks `executor.before_retry(delay)`: the local
executor sleeps here and returns 0; an executor whose transport can hold a
request back (RabbitMQ delay queues) returns the delay at once, and the engine
passes what is left of it with each guarded request, so no process holds a
timer for it.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from .codec import as_declared
from .errors import AtomTimeout

if TYPE_CHECKING:
    from .atom import Atom

__all__ = ["Executor", "LocalExecutor", "invoke"]


class Executor(Protocol):
    """Where an engine's tasks run (`LocalExecutor` unless one is given)."""

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
        """Run `atom`'s execute with `kwargs`, starting no sooner than `delay` seconds."""
        ...

    async def revert(self, atom: Atom, name: str, flow: str, kwargs: dict[str, Any]) -> Any:
        """Run `atom`'s revert with `kwargs` (None when it has none)."""
        ...

    async def before_retry(self, delay: float) -> float:
        """Wait out (part of) a retry's `delay`; return what guarded requests must still wait."""
        ...


async def invoke(
    fn: Callable[..., Any],
    kwargs: dict[str, Any],
    *,
    is_async: bool,
    name: str,
    time_limit: float | None = None,
) -> Any:
    """Call `fn(**kwargs)` as a step: await a coroutine function, thread a plain one.

    A plain function runs in anyio's worker threads with a copy of the
    caller's context (so `zag.progress()` and tracing spans reach it). With a
    `time_limit`, a call that outlives it raises `AtomTimeout` naming `name`; a
    `TimeoutError` the step raised itself is left as it is.
    """
    if time_limit is None:
        return await fn(**kwargs) if is_async else await _in_thread(fn, kwargs)
    try:
        async with asyncio.timeout(time_limit) as scope:
            return await fn(**kwargs) if is_async else await _in_thread(fn, kwargs)
    except TimeoutError as exc:
        if scope.expired():
            raise AtomTimeout(name, time_limit) from exc
        raise


async def _in_thread(fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    # Imported here: a flow of coroutines only should not pay for loading anyio.
    import anyio.to_thread

    ctx = contextvars.copy_context()
    return await anyio.to_thread.run_sync(functools.partial(ctx.run, fn, **kwargs))


class LocalExecutor:
    """Runs tasks in this process, on the engine's event loop (the default)."""

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
            await asyncio.sleep(delay)
        fn = atom.execute_fn or atom.execute
        kwargs = as_declared(fn, kwargs, atom=name)
        if time_limit is None and atom.execute_async:
            return await fn(**kwargs)  # the common case, one frame shorter
        is_async = atom.execute_async
        return await invoke(fn, kwargs, is_async=is_async, name=name, time_limit=time_limit)

    async def revert(self, atom: Atom, name: str, flow: str, kwargs: dict[str, Any]) -> Any:
        fn = atom.revert_fn
        if fn is None:
            return None
        kwargs = as_declared(fn, kwargs, atom=name)
        return await invoke(fn, kwargs, is_async=atom.revert_async, name=name)

    async def before_retry(self, delay: float) -> float:
        """Sleep the whole delay here: nothing is left for the guarded atoms."""
        if delay > 0:
            await asyncio.sleep(delay)
        return 0.0
