"""The asyncio engine: runs a compiled flow, reverts on failure, retries by policy.

The engine is a single event-loop scheduler. Atoms run as soon as their inputs
exist, at most `max_concurrency` at a time; when there is exactly one thing
to do it is awaited inline, so serial flows pay no task-creation cost. Every
state change goes through `Storage` and is committed before the atoms it
starts are launched, so a durable backend always knows what was running.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import hashlib
import inspect
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeGuard, runtime_checkable

import anyio.to_thread

from .atom import _WHOLE, Arg, Atom
from .compiler import CompiledFlow, Node, compile_flow, gc_paused
from .errors import (
    AtomInterrupted,
    AtomTimeout,
    ConfigurationError,
    ExecutionError,
    FlowChanged,
    MissingRequirements,
    NotFound,
    SerializationError,
    StorageError,
    WrappedFailure,
    ZagError,
)
from .events import Event, Listener, _current
from .factory import FactoryRef
from .failure import Failure
from .flow import Depth, Flow
from .models import AtomDetail, FlowDetail
from .retry import Decision, History
from .states import (
    RETRY_TRANSITIONS,
    TASK_TRANSITIONS,
    AtomState,
    FlowState,
    Intention,
    check_atom_transition,
    check_flow_transition,
)
from .storage import Storage, WritePolicy

if TYPE_CHECKING:
    from .persistence.base import Backend


class Executor(Protocol):
    """Where an engine's tasks run (the default is in-process, without one)."""

    #: True when the executor delays requests itself (the engine keeps no timer).
    remote_delays: bool

    async def execute(
        self,
        atom: Atom,
        name: str,
        flow: str,
        kwargs: dict[str, Any],
        *,
        time_limit: float | None,
        delay: float,
    ) -> Any: ...

    async def revert(self, atom: Atom, name: str, flow: str, kwargs: dict[str, Any]) -> Any: ...


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


__all__ = ["Engine", "Executor", "TraceHook", "resume", "run"]

logger = logging.getLogger("zag_async")

S = AtomState
_DONE = (S.SUCCESS, S.IGNORE)
_BUSY = (S.RUNNING, S.REVERTING, S.RETRYING)
_REVERTIBLE = (S.SUCCESS, S.FAILURE)

#: A finished call: (kind, node index, ok, value or Failure, duration)
_Outcome = tuple[str, int, bool, Any, float]

# Resolutions of a failure: revert everything, revert one retry scope, retry one scope.
_ALL = ("all", -1)


class Engine:
    """Runs one flow; create one per run, or load one to resume it.

    Constructing an engine compiles and validates the flow, so a flow that
    cannot run raises `FlowDefinitionError` here, before anything runs.

    Args:
        flow: the flow (or a single atom) to run.
        store: initial values atoms may require (saved with the flow).
        max_concurrency: how many atoms may run at once; None is unbounded,
            1 is serial.
        listeners: callables receiving every `Event` (sync or async).
        defer_reverts: a REVERT decision with no enclosing retry controller
            reverts the whole flow instead of only the guarded subflow.
        target: run only this atom and what it needs.
        backend: where to persist state (see `zag_async.persistence.connect`);
            None keeps it in memory only.
        logbook: uuid of the logbook the new flow record belongs to.
        storage: an existing flow's storage (what `Engine.load` uses).
        allow_changes: when resuming, match atoms by name even if the flow's
            atoms or links changed since it was stored.
        write_policy: how long commits retry while the backend is unreachable.
        executor: run tasks elsewhere (e.g. `zag.RemoteExecutor` on remote
            workers); None runs them in this process. Retry controllers and
            deciders always run here.
    """

    def __init__(
        self,
        flow: Flow | Atom,
        *,
        store: Mapping[str, Any] | None = None,
        max_concurrency: int | None = None,
        listeners: Iterable[Listener] = (),
        defer_reverts: bool = False,
        target: str | Atom | None = None,
        backend: Backend | None = None,
        logbook: str | None = None,
        storage: Storage | None = None,
        allow_changes: bool = False,
        write_policy: WritePolicy | None = None,
        executor: Executor | None = None,
        _factory: FactoryRef | None = None,
    ) -> None:
        if max_concurrency is not None and (
            not isinstance(max_concurrency, int)
            or isinstance(max_concurrency, bool)
            or max_concurrency < 1
        ):
            raise ConfigurationError(
                f"max_concurrency must be None or a whole number >= 1, got {max_concurrency!r}"
            )
        if storage is not None and (backend is not None or logbook is not None):
            raise ConfigurationError("pass either storage= or backend=/logbook=, not both")
        self.max_concurrency = max_concurrency
        self.defer_reverts = defer_reverts
        self._executor = executor
        self._delays: dict[int, float] = {}  # retry node -> monotonic time its delay ends
        self._listeners: list[Listener] = list(listeners)
        self._sync_listeners: tuple[Listener, ...] = ()
        self._async_listeners: tuple[Listener, ...] = ()
        self._sort_listeners()
        self._hooks: list[TraceHook] = []
        with gc_paused():
            self._setup(flow, store, storage, backend, logbook, target, allow_changes, _factory)
        if write_policy is not None:
            self.storage.policy = write_policy
        self._suspend_requested = False
        self._running_flag = False
        self._done: list[_Outcome] = []
        self._wakeup: asyncio.Future[None] | None = None
        self._events: asyncio.Queue[Event | None] | None = None
        self._loop_thread: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._storage_error: StorageError | None = None

    @classmethod
    def from_factory(
        cls,
        factory: Callable[..., Flow | Atom] | str,
        *,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Engine:
        """An engine for the flow `factory(*args, **kwargs)` builds.

        The factory (an importable module-level function, or its
        `"module:function"` path) is saved with the flow, so `Engine.load`
        can rebuild the flow in any process.
        """
        ref = FactoryRef.of(factory, args, kwargs)
        return cls(ref.build(), _factory=ref, **options)

    @classmethod
    async def load(
        cls,
        flow_id: str,
        *,
        backend: Backend,
        flow: Flow | Atom | None = None,
        owner: str | None = None,
        **options: Any,
    ) -> Engine:
        """An engine that resumes the stored flow `flow_id`.

        The flow is rebuilt from its saved factory unless `flow` is given.
        With `owner`, the flow is first claimed for that owner: any engine
        still holding the old state can no longer write (`ConcurrentUpdate`).
        """
        detail = await backend.load_flow(flow_id)
        if flow is None:
            saved = detail.meta.get("factory")
            if saved is None:
                raise ConfigurationError(
                    f"flow {detail.name!r} ({flow_id}) was not started from a factory; "
                    f"pass flow= to resume it"
                )
            flow = FactoryRef.from_dict(saved).build()
        if owner is not None:
            await backend.claim_flow(detail, owner)
        return cls(flow, storage=Storage(detail, backend=backend), **options)

    def _setup(
        self,
        flow: Flow | Atom,
        store: Mapping[str, Any] | None,
        storage: Storage | None,
        backend: Backend | None,
        logbook: str | None,
        target: str | Atom | None,
        allow_changes: bool,
        factory: FactoryRef | None,
    ) -> None:
        """Compile, attach atom records and validate (with the collector paused)."""
        self.flow = flow
        self.compiled: CompiledFlow = compile_flow(flow)
        nodes = self.compiled.nodes
        self._nodes = nodes
        resumed = storage is not None
        if storage is None:
            detail = FlowDetail(self.compiled.name, logbook=logbook)
            storage = Storage(detail, backend=backend, store=store)
            if storage.durable:
                detail.meta["fingerprint"] = _fingerprint(nodes)
                if factory is not None:
                    detail.meta["factory"] = factory.to_dict()
        elif store:
            storage.store.update(store)
        self.storage = storage
        atoms = storage.flow.atoms
        if resumed and storage.durable:
            self._check_unchanged(storage.flow, allow_changes)
        details: list[AtomDetail] = []
        for node in nodes:
            d = atoms.get(node.name)
            if d is None:
                d = AtomDetail(node.name, "retry" if node.is_retry else "task")
                if node.is_retry:
                    d.history = History()
                atoms[node.name] = d
                storage.touch(d)
            if d.position != node.index:
                d.position = node.index
                storage.touch(d)
            details.append(d)
        self._details = details
        storage.attach(self.compiled.providers, details, [n.atom for n in nodes])
        self._active: list[bool] | None = None
        if target is not None:
            self._active = self._needed_for(target)
        self._validate()

    def _check_unchanged(self, detail: FlowDetail, allow_changes: bool) -> None:
        """Refuse to resume a stored flow whose shape no longer matches the code."""
        stored = detail.meta.get("fingerprint")
        if stored is None:  # a record made without the flow (a posted job): record it now
            detail.meta["fingerprint"] = _fingerprint(self._nodes)
            self.storage._flow_dirty = True
            return
        if stored == _fingerprint(self._nodes):
            return
        if allow_changes:
            logger.warning(
                "flow %r (%s) changed since it was stored; matching atoms by name",
                detail.name,
                detail.uuid,
            )
            return
        names = {n.name for n in self._nodes}
        added = sorted(names - detail.atoms.keys())
        removed = sorted(detail.atoms.keys() - names)
        raise FlowChanged(detail.name, added, removed)

    @property
    def flow_id(self) -> str:
        """The uuid of this flow's record (what `Engine.load` takes)."""
        return self.storage.flow.uuid

    # -- public ------------------------------------------------------------------

    @property
    def state(self) -> FlowState:
        return self.storage.flow.state

    @property
    def name(self) -> str:
        return self.compiled.name

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Attach a listener; returns a function that detaches it."""
        self._listeners.append(listener)
        self._sort_listeners()

        def detach() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)
                self._sort_listeners()

        return detach

    def _sort_listeners(self) -> None:
        """Split listeners into sync and async once, not on every event."""
        self._sync_listeners = tuple(x for x in self._listeners if not _is_async_listener(x))
        self._async_listeners = tuple(x for x in self._listeners if _is_async_listener(x))

    def suspend(self) -> None:
        """Let running atoms finish, start nothing new, end SUSPENDED.

        Has no effect on a flow that is not running. `run()` again resumes.
        """
        if self._running_flag:
            self._suspend_requested = True

    def reset(self) -> None:
        """Forget every atom's outcome so the flow can run again from the start."""
        if self._running_flag:
            raise ExecutionError(f"flow {self.name!r} is running; it cannot be reset now")
        for d in self._details:
            d.state, d.intention = S.PENDING, Intention.EXECUTE
            d.result = d.failure = d.revert_result = d.revert_failure = None
            if d.history is not None:
                d.history = History()
            self.storage.touch(d)
        self.storage.flow.meta.pop("revert_all", None)
        self.storage.set_flow_state(FlowState.PENDING)

    async def run(self) -> Mapping[str, Any]:
        """Run (or resume) the flow; returns every provided value by name.

        On failure the flow is reverted and the original exception re-raised
        (`WrappedFailure` when several atoms failed). Cancelling the caller
        cancels running atoms, leaves the flow SUSPENDED and re-raises
        `CancelledError`; a later `run()` resumes.
        """
        if self._running_flag:
            raise ExecutionError(f"flow {self.name!r} is already running")
        state = self.state
        if state is FlowState.SUCCESS:
            return self.storage.fetch_all()
        if state in (FlowState.REVERTED, FlowState.FAILURE):
            self._raise_outcome()
        self._running_flag = True
        self._suspend_requested = False
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._hooks = [x for x in self._listeners if _is_hook(x)]
        try:
            if self._hooks:
                return await self._traced_run(state)
            return await self._run(state)
        finally:
            self._running_flag = False
            self._wakeup = None

    async def _traced_run(self, state: FlowState) -> Mapping[str, Any]:
        with contextlib.ExitStack() as scopes:
            for hook in self._hooks:
                scopes.enter_context(hook.flow_scope(self))
            return await self._run(state)

    async def _run(self, state: FlowState) -> Mapping[str, Any]:
        if state in (FlowState.RUNNING, FlowState.SUSPENDING):
            # Left mid-run by a crash: the recorded way back is through RESUMING.
            self._set_flow(FlowState.RESUMING)
            self._set_flow(FlowState.SUSPENDED)
        async with self._event_pump():
            self._set_flow(FlowState.RUNNING)
            try:
                await self._run_loop()
            except asyncio.CancelledError:
                await self._finish_cancelled()
                raise
            return await self._finish()

    async def run_iter(self) -> AsyncIterator[Event]:
        """Run the flow, yielding every event as it happens.

        Raises what `run()` raises once the events are exhausted.
        """
        queue: asyncio.Queue[Event] = asyncio.Queue()
        detach = self.add_listener(queue.put_nowait)
        runner = asyncio.ensure_future(self.run())
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

    # -- setup -------------------------------------------------------------------

    def _needed_for(self, target: str | Atom) -> list[bool]:
        name = target.name if isinstance(target, Atom) else target
        node = self.compiled.find(name)
        if node is None:
            raise NotFound(f"flow {self.name!r}: target {name!r} is not an atom of this flow")
        active = [False] * len(self._nodes)
        stack = [node.index]
        while stack:
            i = stack.pop()
            if not active[i]:
                active[i] = True
                stack.extend(self._nodes[i].preds)
        return active

    def _validate(self) -> None:
        store = self.storage.store
        missing: dict[str, list[str]] = {}
        for_revert: dict[str, list[str]] = {}
        active = self._active
        for node in self._nodes:
            if active is not None and not active[node.index]:
                continue
            for arg, cands in zip(node.atom.args, node.cands, strict=True):
                if not cands and not arg.optional and arg.symbol not in store:
                    missing.setdefault(node.name, []).append(arg.symbol)
            for arg, cands in zip(node.atom.revert_args, node.revert_cands, strict=True):
                symbol = arg.symbol
                if not cands and not arg.optional and symbol not in store:
                    names = missing.setdefault(node.name, [])
                    if symbol not in names:
                        names.append(symbol)
                        for_revert.setdefault(node.name, []).append(symbol)
        if missing:
            raise MissingRequirements(self.name, missing, for_revert)

    # -- state changes -----------------------------------------------------------

    def _set_flow(self, new: FlowState) -> None:
        check_flow_transition(self.name, self.storage.flow.state, new)
        self.storage.set_flow_state(new)
        if self._listeners:
            self._emit(Event("flow", self.name, new))

    def _set(self, i: int, new: AtomState, **fields: Any) -> None:
        d = self._details[i]
        node = self._nodes[i]
        if (d.state, new) not in (RETRY_TRANSITIONS if node.is_retry else TASK_TRANSITIONS):
            check_atom_transition(node.name, d.state, new, retry=node.is_retry)
        d.state = new
        for key, value in fields.items():
            setattr(d, key, value)
        self.storage._dirty[d.name] = d
        if self._listeners:
            self._emit(
                Event(
                    "atom",
                    self.name,
                    new,
                    node.name,
                    result=fields.get("result", fields.get("revert_result")),
                    failure=fields.get("failure", fields.get("revert_failure")),
                    duration=fields.get("duration"),
                )
            )

    def _intend(self, i: int, intention: Intention) -> None:
        d = self._details[i]
        if d.intention is not intention:
            d.intention = intention
            self.storage._dirty[d.name] = d

    # -- events ------------------------------------------------------------------

    def _emit(self, event: Event) -> None:
        """Deliver an event: sync listeners now, async ones through the dispatcher."""
        if self._loop is not None and threading.get_ident() != self._loop_thread:
            self._loop.call_soon_threadsafe(self._emit, event)
            return
        if self._async_listeners and self._events is not None:
            self._events.put_nowait(event)
        for listener in self._sync_listeners:
            try:
                listener(event)
            except Exception:  # a broken listener must not break the flow
                logger.exception("listener %r failed on %s", listener, event)

    @contextlib.asynccontextmanager
    async def _event_pump(self) -> AsyncIterator[None]:
        """Deliver events to async listeners for the whole run, flow events included."""
        if not self._async_listeners:
            yield
            return
        queue: asyncio.Queue[Event | None] = asyncio.Queue()
        self._events = queue
        pump = asyncio.ensure_future(self._dispatch(queue))
        try:
            yield
        finally:
            self._events = None
            queue.put_nowait(None)
            try:
                await asyncio.shield(pump)
            except asyncio.CancelledError:
                pump.cancel()
                raise

    async def _dispatch(self, queue: asyncio.Queue[Event | None]) -> None:
        """Await async listeners one event at a time, in order."""
        while True:
            event = await queue.get()
            if event is None:
                return
            for listener in self._async_listeners:
                try:
                    res = listener(event)
                    if inspect.isawaitable(res):
                        await res
                except Exception:
                    logger.exception("listener %r failed on %s", listener, event)

    # -- the loop ----------------------------------------------------------------

    def _scan(self) -> None:
        """Work out what to do from the recorded states (fresh run or resume)."""
        nodes, details, active = self._nodes, self._details, self._active
        n = len(nodes)
        self._waiting = waiting = [0] * n
        self._ready: deque[int] = deque()
        self._revert_ready: deque[int] = deque()
        self._running: set[int] = set()
        self._retrying: set[int] = set()
        self._revert_all = bool(self.storage.flow.meta.get("revert_all"))
        self._revert_failed = any(d.state is S.REVERT_FAILURE for d in details)
        for i, node in enumerate(nodes):
            if active is not None and not active[i]:
                continue
            d = details[i]
            count = 0
            for p in node.preds:
                if details[p].state not in _DONE:
                    count += 1
            waiting[i] = count
            if d.intention is Intention.EXECUTE:
                if d.state is S.PENDING and count == 0 or d.state in (S.RUNNING, S.RETRYING):
                    self._ready.append(i)
            elif d.intention is Intention.REVERT:
                if d.state is S.REVERTING:
                    self._revert_ready.append(i)
                else:
                    self._maybe_revert(i)
            elif d.intention is Intention.RETRY:
                self._retrying.add(i)
        interrupted = [
            i
            for i in self._ready
            if details[i].state is S.RUNNING and not nodes[i].atom.is_idempotent
        ]
        if interrupted:
            # Whether they finished is unknown: fail them (which reverts them) instead.
            self._ready = deque(i for i in self._ready if i not in interrupted)
            for i in interrupted:
                failure = Failure.from_exception(AtomInterrupted(nodes[i].name))
                self._set(i, S.FAILURE, failure=failure)
                self._on_failure(i, failure)

    async def _run_loop(self) -> None:
        self._scan()
        self._done.clear()
        async with asyncio.TaskGroup() as tg:
            await self._loop_body(tg)

    async def _loop_body(self, tg: asyncio.TaskGroup) -> None:
        done = self._done
        running = self._running
        storage = self.storage
        call = self._traced_call if self._hooks else self._call
        while True:
            if done:
                self._process(done)
            if self._retrying:
                self._settle_retries()
            launch = await self._pick()
            if (launch or running) and (storage._dirty or storage._flow_dirty):
                try:
                    await storage.commit()
                except StorageError as exc:
                    # Start nothing that is not recorded; let running atoms finish.
                    self._storage_error = exc
                    launch = []
            if launch:
                if len(launch) == 1 and not running:
                    kind, i, kwargs = launch[0]
                    running.add(i)
                    done.append(await call(kind, i, kwargs))
                    continue
                for kind, i, kwargs in launch:
                    running.add(i)
                    tg.create_task(self._spawned(call, kind, i, kwargs))
                continue
            if not running:
                if (self._ready or self._revert_ready) and not (
                    self._suspend_requested or self._revert_failed or self._storage_error
                ):
                    continue  # a failure found while picking queued more work
                return
            if done:
                continue  # atoms finished while we were committing
            self._wakeup = asyncio.get_running_loop().create_future()
            await self._wakeup
            self._wakeup = None

    async def _spawned(
        self,
        call: Callable[[str, int, dict[str, Any]], Awaitable[_Outcome]],
        kind: str,
        i: int,
        kwargs: dict[str, Any],
    ) -> None:
        outcome = await call(kind, i, kwargs)
        self._done.append(outcome)
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    async def _pick(self) -> list[tuple[str, int, dict[str, Any]]]:
        if self._suspend_requested or self._revert_failed or self._storage_error:
            return []
        limit = self.max_concurrency
        room = (limit - len(self._running)) if limit is not None else len(self._nodes)
        if room <= 0:
            return []
        details, nodes = self._details, self._nodes
        launch: list[tuple[str, int, dict[str, Any]]] = []
        revert_ready = self._revert_ready
        while revert_ready and room > 0:
            i = revert_ready.popleft()
            d = details[i]
            if i in self._running or d.intention is not Intention.REVERT:
                continue
            if d.state is not S.REVERTING:
                if d.state not in _REVERTIBLE:
                    continue
                self._set(i, S.REVERTING)
            try:
                kwargs = self._revert_kwargs(i)
            except ZagError as exc:
                self._process([("revert", i, False, Failure.from_exception(exc), 0.0)])
                continue
            launch.append(("revert", i, kwargs))
            room -= 1
        ready = self._ready
        while ready and room > 0:
            i = ready.popleft()
            d = details[i]
            if d.intention is not Intention.EXECUTE or i in self._running:
                continue
            state = d.state
            if state is S.PENDING:
                node = nodes[i]
                if node.deciders is not None and not await self._decide(i):
                    continue
                self._set(i, S.RUNNING)
            elif state is S.RETRYING:
                self._set(i, S.RUNNING)
            elif state is not S.RUNNING:
                continue
            d.attempts += 1
            try:
                kwargs = self._kwargs(i, nodes[i].atom.args, nodes[i].cands)
            except ZagError as exc:
                self._process([("exec", i, False, Failure.from_exception(exc), 0.0)])
                continue
            launch.append(("exec", i, kwargs))
            room -= 1
        return launch

    # -- calling atoms -------------------------------------------------------------

    def _kwargs(
        self,
        i: int,
        args: tuple[Arg, ...],
        cands: tuple[tuple[int, ...], ...],
        optional: bool = False,
    ) -> dict[str, Any]:
        """Fetch an atom's arguments from its nearest providers, else the store."""
        atom = self._nodes[i].atom
        details, nodes = self._details, self._nodes
        kwargs = dict(atom.injected) if atom.injected else {}
        for arg, providers in zip(args, cands, strict=True):
            symbol = arg.symbol
            for c in providers:
                dc = details[c]
                if dc.state is S.SUCCESS:
                    key = nodes[c].atom.provided[symbol]
                    kwargs[arg.param] = dc.result if key is _WHOLE else dc.result[key]
                    break
            else:
                store = self.storage.store
                if symbol in store:
                    kwargs[arg.param] = store[symbol]
                elif arg.optional:
                    kwargs[arg.param] = arg.default
                elif not optional:
                    skipped = ", ".join(
                        f"{nodes[c].name!r} ({details[c].state})" for c in providers
                    )
                    raise NotFound(
                        f"atom {atom.name!r}: argument {arg.param!r} needs {symbol!r}, which is "
                        f"not available" + (f" (its providers: {skipped})" if skipped else "")
                    )
        return kwargs

    def _revert_kwargs(self, i: int) -> dict[str, Any]:
        node = self._nodes[i]
        atom = node.atom
        d = self._details[i]
        if atom.revert_fn is None:
            return {}
        if atom.revert_var_kw:
            kwargs = self._kwargs(i, atom.args, node.cands, optional=True)
        else:
            kwargs = dict(atom.revert_injected)
        kwargs.update(self._kwargs(i, atom.revert_args, node.revert_cands))
        if atom.revert_var_kw or "result" in atom.revert_keywords:
            kwargs["result"] = d.failure if d.failure is not None else d.result
        if atom.revert_var_kw or "flow_failures" in atom.revert_keywords:
            kwargs["flow_failures"] = self.storage.failures
        return kwargs

    async def _call(self, kind: str, i: int, kwargs: dict[str, Any]) -> _Outcome:
        node = self._nodes[i]
        atom = node.atom
        token = _current.set((self._emit, self.name, node.name))
        started = time.perf_counter()
        try:
            if kind == "exec":
                if node.is_retry:
                    value = await self._call_retry(i, kwargs)
                elif self._executor is not None:
                    value = await self._executor.execute(
                        atom,
                        node.name,
                        self.name,
                        kwargs,
                        time_limit=atom.timeout_s,
                        delay=self._retry_delay(i),
                    )
                    if atom.needs_check:
                        atom.check_result(value)
                else:
                    fn, is_async = atom.execute_fn or atom.execute, atom.execute_async
                    timeout = atom.timeout_s
                    if timeout is None:
                        value = await fn(**kwargs) if is_async else await _in_thread(fn, kwargs)
                    else:
                        value = await _with_timeout(node.name, timeout, fn, is_async, kwargs)
                    if atom.needs_check:
                        atom.check_result(value)
            else:
                fn_r = atom.revert_fn
                if fn_r is None:
                    value = None
                elif self._executor is not None and not node.is_retry:
                    value = await self._executor.revert(atom, node.name, self.name, kwargs)
                else:
                    if node.is_retry:
                        history = self._details[i].history
                        kwargs["history"] = history.copy() if history is not None else History()
                    value = (
                        await fn_r(**kwargs)
                        if atom.revert_async
                        else await _in_thread(fn_r, kwargs)
                    )
            return kind, i, True, value, time.perf_counter() - started
        except Exception as exc:
            return kind, i, False, Failure.from_exception(exc), time.perf_counter() - started
        finally:
            _current.reset(token)

    async def _traced_call(self, kind: str, i: int, kwargs: dict[str, Any]) -> _Outcome:
        """`_call` inside every trace hook's atom scope (only when tracing)."""
        name = self._nodes[i].name
        action: Literal["execute", "revert"] = "execute" if kind == "exec" else "revert"
        attempt = self._details[i].attempts
        if len(self._hooks) == 1:  # the usual case, without the ExitStack
            with self._hooks[0].atom_scope(self, name, action, attempt) as record:
                outcome = await self._call(kind, i, kwargs)
                record(None if outcome[2] else outcome[3])
            return outcome
        with contextlib.ExitStack() as scopes:
            done = [
                scopes.enter_context(hook.atom_scope(self, name, action, attempt))
                for hook in self._hooks
            ]
            outcome = await self._call(kind, i, kwargs)
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
                if self._executor is not None and self._executor.remote_delays:
                    # No timer here: the guarded atoms' requests carry the delay
                    # and the broker holds them back (delay queues).
                    self._delays[i] = time.monotonic() + delay
                else:
                    await asyncio.sleep(delay)
        fn = atom.execute_fn or atom.execute
        kwargs["history"] = history.copy()
        return await fn(**kwargs) if atom.execute_async else await _in_thread(fn, kwargs)

    def _retry_delay(self, i: int) -> float:
        """Seconds a remote request of node i must still wait for its retry's delay."""
        if not self._delays:
            return 0.0
        r = self._nodes[i].retry
        while r >= 0:
            deadline = self._delays.get(r)
            if deadline is not None:
                return max(deadline - time.monotonic(), 0.0)
            r = self._nodes[r].retry
        return 0.0

    # -- completions ----------------------------------------------------------------

    def _process(self, outcomes: list[_Outcome]) -> None:
        items = list(outcomes)
        outcomes.clear()
        for kind, i, ok, value, duration in items:
            self._running.discard(i)
            if kind == "exec":
                self._executed(i, ok, value, duration)
            else:
                self._reverted(i, ok, value, duration)

    def _executed(self, i: int, ok: bool, value: Any, duration: float) -> None:
        node = self._nodes[i]
        d = self._details[i]
        if ok and self.storage.durable:
            ok, value = self._storable(node.name, "result", value)
        if ok:
            if node.is_retry:
                assert d.history is not None
                d.history.add_attempt(value)
            self._set(i, S.SUCCESS, result=value, failure=None, duration=duration)
            if d.intention is Intention.EXECUTE:
                waiting, details, ready, active = (
                    self._waiting,
                    self._details,
                    self._ready,
                    self._active,
                )
                for s in node.succs:
                    waiting[s] -= 1
                    if (
                        waiting[s] == 0
                        and details[s].state is S.PENDING
                        and (active is None or active[s])
                    ):
                        ready.append(s)
            else:
                self._maybe_revert(i)
        else:
            self._set(i, S.FAILURE, failure=value, duration=duration)
            self._on_failure(i, value)
        self._recheck_preds(i)

    def _storable(self, atom: str, what: str, value: Any) -> tuple[bool, Any]:
        """Check a value can be saved; if not, the atom fails now (not on a later load)."""
        try:
            self.storage.check_value(value)
        except SerializationError as exc:
            error = SerializationError(f"atom {atom!r}: its {what} cannot be saved: {exc}")
            error.__cause__ = exc
            return False, Failure.from_exception(error)
        return True, value

    def _reverted(self, i: int, ok: bool, value: Any, duration: float) -> None:
        if ok and self.storage.durable:
            ok, value = self._storable(self._nodes[i].name, "revert result", value)
        if ok:
            self._set(i, S.REVERTED, revert_result=value, duration=duration)
            self._recheck_preds(i)
        else:
            self._set(i, S.REVERT_FAILURE, revert_failure=value, duration=duration)
            self._revert_failed = True

    def _recheck_preds(self, i: int) -> None:
        """Node i settled: its predecessors (seen through skipped atoms) may revert now."""
        details, nodes = self._details, self._nodes
        stack = list(nodes[i].preds)
        seen: set[int] | None = None
        while stack:
            p = stack.pop()
            dp = details[p]
            if dp.state is S.IGNORE:
                seen = seen if seen is not None else set()
                for q in nodes[p].preds:
                    if q not in seen:
                        seen.add(q)
                        stack.append(q)
            elif dp.intention is Intention.REVERT:
                self._maybe_revert(p)

    def _maybe_revert(self, i: int) -> None:
        d = self._details[i]
        if d.intention is not Intention.REVERT or d.state not in _REVERTIBLE or i in self._running:
            return
        details, nodes = self._details, self._nodes
        stack = list(nodes[i].succs)
        seen: set[int] | None = None
        while stack:
            s = stack.pop()
            ds = details[s]
            if ds.state in _BUSY or (ds.intention is Intention.REVERT and ds.state in _REVERTIBLE):
                return
            if ds.state is S.IGNORE:  # look through skipped atoms to what ran after them
                seen = seen if seen is not None else set()
                for t in nodes[s].succs:
                    if t not in seen:
                        seen.add(t)
                        stack.append(t)
        self._revert_ready.append(i)

    # -- failure handling -------------------------------------------------------------

    def _on_failure(self, i: int, failure: Failure) -> None:
        kind, r = self._resolve(self._nodes[i].retry, self._nodes[i].name, failure)
        if self._revert_all:
            self._intend(i, Intention.REVERT)
            self._maybe_revert(i)
            return
        if kind == "all":
            self._revert_all = True
            self.storage.flow.meta["revert_all"] = True
            self.storage._flow_dirty = True
            targets: Iterable[int] = range(len(self._nodes))
        else:
            rd = self._details[r]
            scope = self._nodes[r].scope or []
            if kind == "retry" and rd.intention is Intention.REVERT:
                targets = (i,)  # an enclosing revert already covers this scope
            elif kind == "retry":
                if rd.intention is not Intention.RETRY:
                    self._intend(r, Intention.RETRY)
                    self._retrying.add(r)
                targets = scope
            else:
                targets = [r, *scope]
                self._retrying.discard(r)
        for n in targets:
            self._intend(n, Intention.REVERT)
        for n in targets:
            self._maybe_revert(n)

    def _resolve(self, r: int, failed: str, failure: Failure) -> tuple[str, int]:
        """Ask the retry controllers, innermost first, what this failure means."""
        if r < 0:
            return _ALL
        node = self._nodes[r]
        d = self._details[r]
        if d.history is None:
            d.history = History()
        d.history.add_failure(failed, failure)
        self.storage._dirty[d.name] = d
        ctl = node.atom
        try:
            extra: dict[str, Any] = {}
            wanted = getattr(ctl, "on_failure_args", ())
            if wanted:
                args = self._kwargs(r, ctl.args, node.cands, optional=True)
                extra = {k: v for k, v in args.items() if k in wanted}
            decision = Decision(ctl.on_failure(d.history.copy(), **extra))  # type: ignore[attr-defined]
        except Exception:
            logger.exception("retry controller %r failed to decide", node.name)
            return _ALL
        if decision is Decision.RETRY:
            return ("retry", r)
        if decision is Decision.REVERT_ALL:
            return _ALL
        # REVERT defers to the enclosing controller; with none, only this scope
        # is reverted unless the engine was asked to defer reverts to the flow.
        if node.retry >= 0 or self.defer_reverts:
            return self._resolve(node.retry, node.name, failure)
        return ("scope", r)

    def _settle_retries(self) -> None:
        """Restart each retry scope whose atoms have all been reverted."""
        details = self._details
        for r in list(self._retrying):
            rd = details[r]
            if rd.intention is not Intention.RETRY:
                self._retrying.discard(r)
                continue
            scope = self._nodes[r].scope or []
            if any(details[n].state not in (S.PENDING, S.REVERTED, S.IGNORE) for n in scope):
                continue
            if rd.state in _BUSY or r in self._running:
                continue
            self._retrying.discard(r)
            for n in scope:
                d = details[n]
                if d.state is not S.PENDING:
                    self._set(n, S.PENDING)
                d.result = d.failure = d.revert_result = d.revert_failure = None
                if d.history is not None:
                    d.history = History()
                self._intend(n, Intention.EXECUTE)
                self.storage._dirty[d.name] = d
            self._set(r, S.RETRYING)
            self._intend(r, Intention.EXECUTE)
            waiting = self._waiting
            for n in scope:
                waiting[n] = sum(1 for p in self._nodes[n].preds if details[p].state not in _DONE)
            self._ready.append(r)

    # -- deciders -------------------------------------------------------------------

    async def _decide(self, i: int) -> bool:
        """Run the deciders on the edges into node i; False if it was skipped."""
        details, nodes = self._details, self._nodes
        for spec in nodes[i].deciders or ():
            history = {
                nodes[s].name: details[s].result
                for s in spec.sources
                if details[s].state is S.SUCCESS
            }
            if not history:
                continue
            try:
                verdict = spec.decider(history)
                if inspect.isawaitable(verdict):
                    verdict = await verdict
            except Exception as exc:
                self._set(i, S.RUNNING)
                self._process([("exec", i, False, Failure.from_exception(exc), 0.0)])
                return False
            if not verdict:
                self._ignore(spec.target, spec.depth, spec.scope)
                return False
        return True

    def _ignore(self, targets: list[int], depth: Depth, scope: list[int]) -> None:
        nodes, details = self._nodes, self._details
        chosen: list[int] = list(targets)
        seen = set(chosen)
        if depth is Depth.NEIGHBORS:
            for t in targets:
                for s in nodes[t].succs:
                    if s not in seen:
                        seen.add(s)
                        chosen.append(s)
        elif depth in (Depth.ALL, Depth.FLOW):
            allowed = set(scope) if depth is Depth.FLOW else None
            stack = list(targets)
            while stack:
                t = stack.pop()
                for s in nodes[t].succs:
                    if s not in seen and (allowed is None or s in allowed):
                        seen.add(s)
                        chosen.append(s)
                        stack.append(s)
        ignored = [n for n in chosen if details[n].state is S.PENDING]
        for n in ignored:
            self._set(n, S.IGNORE)
            self._intend(n, Intention.IGNORE)
        waiting, ready = self._waiting, self._ready
        for n in ignored:
            for s in nodes[n].succs:
                waiting[s] -= 1
                if waiting[s] == 0 and details[s].state is S.PENDING:
                    ready.append(s)

    # -- finishing --------------------------------------------------------------------

    def _work_left(self) -> bool:
        """True when some atom could still make progress."""
        active, waiting = self._active, self._waiting
        if self._retrying:
            return True
        for i, d in enumerate(self._details):
            if active is not None and not active[i]:
                continue
            if d.state in _BUSY:
                return True
            if d.intention is Intention.EXECUTE and d.state is S.PENDING and waiting[i] == 0:
                return True
            if d.intention in (Intention.REVERT, Intention.RETRY) and d.state in _REVERTIBLE:
                return True
        return False

    async def _finish(self) -> Mapping[str, Any]:
        if self._storage_error is not None:
            error, self._storage_error = self._storage_error, None
            self._suspend_requested = False
            self._set_flow(FlowState.SUSPENDING)
            self._set_flow(FlowState.SUSPENDED)
            raise error
        suspended = self._suspend_requested and self._work_left()
        self._suspend_requested = False
        if suspended:
            self._set_flow(FlowState.SUSPENDING)
            self._set_flow(FlowState.SUSPENDED)
            await self.storage.commit()
            return self.storage.fetch_all()
        failures = self.storage.failures
        revert_failed = any(d.state is S.REVERT_FAILURE for d in self._details)
        stuck = not (failures or revert_failed) and self._work_left()
        if revert_failed or stuck:
            final = FlowState.FAILURE
        elif failures:
            final = FlowState.REVERTED
        else:
            final = FlowState.SUCCESS
        previous = self.storage.flow.state
        self._set_flow(final)
        try:
            await self.storage.commit()
        except StorageError:
            # Claim nothing that was not written: undo the unrecorded end state
            # and stay SUSPENDED; the next run() writes what this one holds.
            self.storage.flow.state = previous
            self._set_flow(FlowState.SUSPENDING)
            self._set_flow(FlowState.SUSPENDED)
            raise
        if stuck:
            raise ExecutionError(f"flow {self.name!r} stopped with atoms left to run (engine bug)")
        if failures or revert_failed:
            self._raise_outcome()
        return self.storage.fetch_all()

    def _raise_outcome(self) -> None:
        failures = self.storage.failures
        revert_failures = [d.revert_failure for d in self._details if d.revert_failure is not None]
        if revert_failures:
            error = revert_failures[0]
            exc = error.exception if error.exception is not None else None
            original = _as_exception(failures)
            if exc is not None and original is not None and exc.__context__ is None:
                exc.__context__ = original
            error.reraise()
        original = _as_exception(failures)
        if original is not None:
            raise original
        raise ExecutionError(f"flow {self.name!r} ended {self.state} without a recorded failure")

    async def _finish_cancelled(self) -> None:
        for fut in (self._wakeup,):
            if fut is not None and not fut.done():
                fut.cancel()
        state = self.storage.flow.state
        if state is FlowState.RUNNING:
            self._set_flow(FlowState.SUSPENDING)
            self._set_flow(FlowState.SUSPENDED)
        try:
            await _shielded_commit(self.storage)
        except StorageError as exc:
            # The canceller must still see CancelledError; the stored state stays
            # at its last commit, from which a later run() resumes.
            logger.warning("flow %r: could not record the suspension: %s", self.name, exc)


def _fingerprint(nodes: list[Node]) -> str:
    """A digest of the flow's shape: atom names, kinds and edges."""
    digest = hashlib.sha256()
    for node in nodes:
        preds = ",".join(sorted(nodes[p].name for p in node.preds))
        digest.update(f"{node.name}|{int(node.is_retry)}|{preds}\n".encode())
    return digest.hexdigest()


def _is_hook(listener: object) -> TypeGuard[TraceHook]:
    return isinstance(listener, TraceHook)


def _is_async_listener(listener: Listener) -> bool:
    call = getattr(type(listener), "__call__", None)  # noqa: B004
    return inspect.iscoroutinefunction(listener) or inspect.iscoroutinefunction(call)


def _as_exception(failures: Mapping[str, Failure]) -> BaseException | None:
    if not failures:
        return None
    if len(failures) == 1:
        return next(iter(failures.values())).to_exception()
    return WrappedFailure(failures)


async def _in_thread(fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    ctx = contextvars.copy_context()
    return await anyio.to_thread.run_sync(functools.partial(ctx.run, fn, **kwargs))


async def _with_timeout(
    name: str, seconds: float, fn: Callable[..., Any], is_async: bool, kwargs: dict[str, Any]
) -> Any:
    try:
        async with asyncio.timeout(seconds) as cm:
            return await fn(**kwargs) if is_async else await _in_thread(fn, kwargs)
    except TimeoutError as exc:
        if cm.expired():
            raise AtomTimeout(name, seconds) from exc
        raise


async def _shielded_commit(storage: Storage) -> None:
    task = asyncio.ensure_future(storage.commit())
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise


async def run(
    flow: Flow | Atom,
    *,
    store: Mapping[str, Any] | None = None,
    max_concurrency: int | None = None,
    listeners: Iterable[Listener] = (),
    defer_reverts: bool = False,
    target: str | Atom | None = None,
    backend: Backend | None = None,
) -> Mapping[str, Any]:
    """Run a flow once; returns every provided value by name.

    State is kept in memory unless a `backend` is given.
    """
    engine = Engine(
        flow,
        store=store,
        max_concurrency=max_concurrency,
        listeners=listeners,
        defer_reverts=defer_reverts,
        target=target,
        backend=backend,
    )
    return await engine.run()


async def resume(flow_id: str, *, backend: Backend, **options: Any) -> Mapping[str, Any]:
    """Load the stored flow `flow_id` (see `Engine.load`) and run it to the end."""
    engine = await Engine.load(flow_id, backend=backend, **options)
    return await engine.run()
