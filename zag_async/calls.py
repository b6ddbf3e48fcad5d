"""How the engine calls one atom: through its executor, inside its trace scopes.

The scheduler says what to call; this module makes the call and turns what
happens into an `Outcome` (a value or a `Failure`, and how long it took). Tasks
go to the engine's executor (`LocalExecutor` unless one was given); retry
controllers always run here, because their decisions are the engine's. Before a
controller runs its scope again it asks the executor to wait out the retry's
delay; what the executor hands back (a remote executor's brokers hold requests
back themselves) is passed on with each guarded request. A revert tried again
(`RevertRetry`) first waits out its pause here, and so does an atom retried
forward past a pivot.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from typing import TYPE_CHECKING, Any, Literal

from .bus import TraceHook
from .compensation import revert_tries
from .compiler import Node
from .events import Event, current_atom
from .execution import Executor, invoke
from .failure import Failure
from .models import AtomDetail, History
from .scheduler import Launch, Outcome

if TYPE_CHECKING:
    from collections.abc import Callable

    from .engine import Engine

__all__ = ["AtomCaller"]


class AtomCaller:
    """Calls the atoms of one engine's flow."""

    def __init__(
        self,
        engine: Engine,
        nodes: list[Node],
        details: list[AtomDetail],
        executor: Executor,
        emit: Callable[[Event], None],
    ) -> None:
        # A weak reference: the engine owns this caller, and a cycle between them
        # would leave every finished run's objects to the cyclic collector, whose
        # passes grow costly with thousands of flows alive.
        self._engine = weakref.ref(engine)
        self._flow = engine.name
        self._nodes = nodes
        self._details = details
        self._executor = executor
        self._delays: dict[int, float] = {}  # retry node -> monotonic time its delay ends
        self.hooks: list[TraceHook] = []
        self._emit = emit

    def _owner(self) -> Engine:
        engine = self._engine()
        assert engine is not None, "an engine's caller outlived its engine"
        return engine

    async def __call__(self, launch: Launch) -> Outcome:
        if self.hooks:
            return await self._traced(launch)
        return await self._call(launch)

    async def _call(self, launch: Launch) -> Outcome:
        kind, i, kwargs = launch
        node = self._nodes[i]
        atom = node.atom
        token = current_atom.set((self._emit, self._flow, node.name))  # for progress()
        started = time.perf_counter()
        try:
            if kind == "exec":
                if node.is_retry:
                    value = await self._call_retry(i, kwargs)
                else:
                    delay = self._retry_delay(i) if self._delays else 0.0
                    scheduler = self._owner().scheduler
                    if scheduler.past_pivot:  # a forward retry waits out its controller's delay
                        delay = max(delay, scheduler.forward_delay(i))
                    value = await self._executor.execute(
                        atom,
                        node.name,
                        self._flow,
                        kwargs,
                        time_limit=atom.timeout_s,
                        delay=delay,
                    )
                    if atom.needs_check:
                        atom.check_result(value)
            elif atom.revert_fn is None:
                value = None
            else:
                tries = revert_tries(self._details[i])
                if tries > 1:  # a try again: wait out the policy's pause first
                    await asyncio.sleep(atom.revert_policy.delay_before(tries - 1))
                    started = time.perf_counter()
                if node.is_retry:
                    value = await self._revert_retry(i, kwargs)
                else:
                    value = await self._executor.revert(atom, node.name, self._flow, kwargs)
            storage = self._owner().storage
            if value is not None and not storage.durable:  # durable: checked with the commit
                what = "result" if kind == "exec" else "revert result"
                storage.check_value(value, atom=node.name, what=what)
            return kind, i, True, value, time.perf_counter() - started
        except Exception as exc:
            failure = Failure.from_exception(exc)
            return kind, i, False, failure, time.perf_counter() - started
        finally:
            current_atom.reset(token)

    async def _traced(self, launch: Launch) -> Outcome:
        """`_call` inside every trace hook's atom scope (only when tracing)."""
        kind, i, _ = launch
        name = self._nodes[i].name
        action: Literal["execute", "revert"] = "execute" if kind == "exec" else "revert"
        attempt = self._details[i].attempts
        engine = self._owner()
        with contextlib.ExitStack() as scopes:
            done = [
                scopes.enter_context(hook.atom_scope(engine, name, action, attempt))
                for hook in self.hooks
            ]
            outcome = await self._call(launch)
            failure = None if outcome[2] else outcome[3]
            for record in done:
                record(failure)
        return outcome

    async def _call_retry(self, i: int, kwargs: dict[str, Any]) -> Any:
        atom = self._nodes[i].atom
        history = self._details[i].history or History()
        self._delays.pop(i, None)
        if len(history):
            delay = atom.delay_before(len(history))  # type: ignore[attr-defined]
            if delay > 0:
                left = await self._executor.before_retry(delay)
                if left > 0:
                    self._delays[i] = time.monotonic() + left
        kwargs["history"] = history.copy()
        fn = atom.execute_fn or atom.execute
        return await invoke(fn, kwargs, is_async=atom.execute_async, name=atom.name)

    async def _revert_retry(self, i: int, kwargs: dict[str, Any]) -> Any:
        atom = self._nodes[i].atom
        assert atom.revert_fn is not None
        history = self._details[i].history
        kwargs["history"] = history.copy() if history is not None else History()
        return await invoke(atom.revert_fn, kwargs, is_async=atom.revert_async, name=atom.name)

    def _retry_delay(self, i: int) -> float:
        """Seconds a request of node i must still wait for its retry controller's delay."""
        nodes = self._nodes
        r = nodes[i].retry
        while r >= 0:
            deadline = self._delays.get(r)
            if deadline is not None:
                return max(deadline - time.monotonic(), 0.0)
            r = nodes[r].retry
        return 0.0
