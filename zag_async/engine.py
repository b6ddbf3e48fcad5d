"""The asyncio engine: runs a compiled flow, reverts on failure, retries by policy.

`Engine` is the public face and the event loop's side of a run: it compiles
and validates the flow, then drives three parts, each in its own module: the
`Scheduler` (what may run next and what an outcome means; synchronous), the
`AtomCaller` (calling an atom through the executor and trace hooks) and the
`EventBus` (listeners). When there is exactly one thing to do it is awaited
inline, so serial flows pay no task-creation cost. Every state change goes
through `Storage` and is committed before the atoms it starts are launched, so
a durable backend always knows what was running; on one, the run also holds
the flow's lease (renewed by a heartbeat in the run's task group). Waits
(`zag.wait_for`, `zag.sleep`) are ended by `Waits`, never called: when only
waits are left the run ends with the flow WAITING.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from . import control
from .atom import Atom
from .bus import EventBus, TraceHook, events_of_run
from .calls import AtomCaller
from .compensation import UNDONE_ENDS, unreverted_of, warn_defer_reverts
from .compiler import CompiledFlow, compile_flow, gc_paused
from .errors import (
    ConfigurationError,
    ExecutionError,
    FlowCancelled,
    StorageError,
)
from .events import Event, Listener
from .execution import Executor, LocalExecutor
from .factory import FactoryRef
from .failure import Failure, as_exception
from .flow import Flow
from .models import AtomDetail, FlowDetail, History, new_id
from .resolver import Resolver
from .scheduler import Launch, Outcome, Scheduler
from .states import ENDED, AtomState, FlowState, Intention
from .storage import Storage, WritePolicy
from .waiting import WaitingFor, Waits, declare_events, waiting_for

if TYPE_CHECKING:
    from .persistence.base import Backend
    from .persistence.leases import Lease

__all__ = ["Engine", "Executor", "TraceHook", "resume", "run"]

logger = logging.getLogger("zag_async")

S = AtomState


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
        defer_reverts: deprecated and ignored (a warning says so): a REVERT
            with no enclosing retry controller always reverts the whole flow,
            so a flow ends REVERTED only when everything that ran was undone.
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
        owner: who runs the flow (recorded on it; its lease is held as
            `owner@host:pid:token`). A stable name lets a restarted process
            resume its own flows at once; None: just this engine.
        lease: seconds the flow's lease lasts unless renewed (default: the
            backend's, 30 s).
    """

    def __init__(
        self,
        flow: Flow | Atom,
        *,
        store: Mapping[str, Any] | None = None,
        max_concurrency: int | None = None,
        listeners: Iterable[Listener] = (),
        defer_reverts: bool | None = None,
        target: str | Atom | None = None,
        backend: Backend | None = None,
        logbook: str | None = None,
        storage: Storage | None = None,
        allow_changes: bool = False,
        write_policy: WritePolicy | None = None,
        executor: Executor | None = None,
        owner: str | None = None,
        lease: float | None = None,
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
        if storage is not None and (
            backend is not None or logbook is not None or owner is not None or lease is not None
        ):
            raise ConfigurationError("pass either storage= or backend=/logbook=/owner=, not both")
        if defer_reverts is not None:
            warn_defer_reverts()
        self.max_concurrency = max_concurrency
        self.executor: Executor = executor if executor is not None else LocalExecutor()
        self.bus = EventBus(listeners)
        terms = backend.lease_for(owner, lease) if backend is not None else None
        with gc_paused():
            self._setup(
                flow, store, storage, backend, logbook, target, allow_changes, _factory, terms
            )
        if owner is not None and storage is None:
            self.storage.flow.owner = owner
        if write_policy is not None:
            self.storage.policy = write_policy
        self._suspend_requested = False
        self._cancel: control.Request | None = None  # a cancel request not applied yet
        self._control_pending = False  # requests are stored: take them at the next step
        self._running_flag = False
        self._done: list[Outcome] = []
        self._wakeup: asyncio.Future[None] | None = None
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
        lease: float | None = None,
        takeover: bool = False,
        **options: Any,
    ) -> Engine:
        """An engine that resumes the stored flow `flow_id`, holding its lease.

        The flow is rebuilt from its saved factory unless `flow` is given.
        An unfinished flow's lease is taken here: `FlowBusy` while another
        owner's lease is live (it is running the flow), else any engine still
        holding the old state can no longer write (`ConcurrentUpdate`).
        With `owner`, the lease and the flow's record name that owner (the
        same owner takes its own lease back at once); `takeover` takes a live
        lease too, for a caller that holds the flow by some other authority.
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
        terms = backend.lease_for(owner, lease)
        engine = cls(flow, storage=Storage(detail, backend=backend, lease=terms), **options)
        await engine.storage.take_lease(claim=owner is not None, takeover=takeover)
        return engine

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
        lease: Lease | None,
    ) -> None:
        """Compile, attach atom records and validate (with the collector paused)."""
        self.flow = flow
        self.compiled: CompiledFlow = compile_flow(flow)
        nodes = self.compiled.nodes
        self._nodes = nodes
        resumed = storage is not None
        if storage is None:
            detail = FlowDetail(self.compiled.name, logbook=logbook)
            storage = Storage(detail, backend=backend, store=store, lease=lease)
            if storage.durable:
                detail.meta["fingerprint"] = self.compiled.fingerprint()
                if factory is not None:
                    detail.meta["factory"] = factory.to_dict()
                declare_events(detail, nodes)
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
        resolver = Resolver(nodes, details, self.compiled.providers, storage.store)
        storage.attach(resolver, details)
        active = None
        if target is not None:
            active = self.compiled.needed_for(target.name if isinstance(target, Atom) else target)
        self.compiled.check_requirements(storage.store.keys(), active)
        self.scheduler = Scheduler(
            self.compiled,
            details,
            storage,
            resolver,
            bus=self.bus,
            active=active,
            max_concurrency=self.max_concurrency,
        )
        self._caller = AtomCaller(self, nodes, details, self.executor, self.bus.emit)
        has_waits = any(node.atom.is_wait for node in nodes)
        self._waits = Waits(nodes, details, storage) if has_waits else None

    def _check_unchanged(self, detail: FlowDetail, allow_changes: bool) -> None:
        """Refuse to resume a stored flow whose shape no longer matches the code."""
        stored = detail.meta.get("fingerprint")
        if stored is None:  # a record made without the flow (a posted job): record it now
            detail.meta["fingerprint"] = self.compiled.fingerprint()
            declare_events(detail, self._nodes)
            self.storage.touch_flow()
        elif not self.compiled.check_matches(stored, detail.atoms.keys(), allow_changes):
            logger.warning(
                "flow %r (%s) changed since it was stored; matching atoms by name",
                detail.name,
                detail.uuid,
            )

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

    @property
    def waiting_for(self) -> tuple[WaitingFor, ...]:
        """The waits the flow is stopped at (empty unless the flow is WAITING)."""
        if self.state is not FlowState.WAITING:
            return ()
        return waiting_for(self._nodes, self._details)

    @property
    def listeners(self) -> tuple[Listener, ...]:
        """The listeners attached now."""
        return self.bus.listeners

    @property
    def tracing(self) -> bool:
        """True while a run is wrapped by trace hooks (a `TraceHook` listener)."""
        return bool(self._caller.hooks)

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Attach a listener; returns a function that detaches it."""
        return self.bus.add(listener)

    def suspend(self) -> None:
        """Let running atoms finish, start nothing new, end SUSPENDED.

        Has no effect on a flow that is not running. `run()` again resumes.
        """
        if self._running_flag:
            self._suspend_requested = True

    def cancel(self, *, by: str = "", reason: str = "") -> None:
        """Start nothing new and revert everything that ran; the run ends REVERTED
        and raises `FlowCancelled` (see `zag.cancel_flow` for a stored flow run
        elsewhere). Has no effect on a flow that is not running.

        Raises:
            ConfigurationError: `by` or `reason` is not a short string.
        """
        control.check_text("by", by, 200)
        control.check_text("reason", reason, 2000)
        if self._running_flag:
            self._apply(control.Request(action="cancel", by=by, reason=reason, at=None))

    def check_control(self) -> None:
        """Look for stored suspend or cancel requests at the run's next step, not at
        the next lease renewal (`zag.cancel_flow` calls this for an engine running in
        this process)."""
        if self._running_flag:
            self._control_pending = True
            self._wake()

    async def _notice_control(self) -> None:
        """At a lease renewal: if requests are stored, have the run's loop take them.

        Only the loop takes (consumes) a request, between steps, so none is taken
        and then lost because the run was already ending."""
        backend = self.storage.backend
        if backend is None:
            return
        for got in await backend.list_signals(self.flow_id):
            if got.event == control.CONTROL_EVENT and got.taken_by is None:
                self.check_control()
                return

    async def _take_control(self, *, stopped: bool = False) -> None:
        """Take the control requests stored for the flow, oldest first, and apply them.

        `stopped`: the run is starting from SUSPENDED or WAITING, so a suspend asked
        meanwhile is stale (the run it was meant for has stopped) and is dropped.
        """
        backend = self.storage.backend
        if backend is None:
            return
        for _ in range(10):  # a bound: a flood of requests cannot hold the run here
            got = await backend.take_signal(self.flow_id, control.CONTROL_EVENT, new_id())
            if got is None:
                return
            request = control.Request.read(got.payload)
            if request is None:
                logger.warning("flow %r: ignored a malformed control request %s", self.name, got.id)
            elif request["action"] == "suspend" and stopped:
                logger.info(
                    "flow %r: dropped a suspend of %r asked while it was stopped",
                    self.name,
                    request["by"],
                )
            else:
                self._apply(request)

    def _apply(self, request: control.Request) -> None:
        """Act on a suspend or cancel: a cancel wins over a suspend, either way round."""
        meta = self.storage.flow.meta
        if request["action"] == "cancel":
            logger.info("flow %r: cancelled on request of %r", self.name, request["by"])
            self._cancel = request
            self._suspend_requested = False  # its reverts must run
            if meta.pop(control.SUSPENDED_KEY, None) is not None:
                self.storage.touch_flow()
        elif self._cancel is not None or control.CANCELLED_KEY in meta:
            logger.info("flow %r: being cancelled; a suspend is ignored", self.name)
            return
        else:
            logger.info("flow %r: suspended on request of %r", self.name, request["by"])
            meta[control.SUSPENDED_KEY] = dict(request)
            self.storage.touch_flow()
            self._suspend_requested = True
        self._wake()

    def _wake(self) -> None:
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    def reset(self) -> None:
        """Forget every atom's outcome so the flow can run again from the start."""
        if self._running_flag:
            raise ExecutionError(f"flow {self.name!r} is running; it cannot be reset now")
        for d in self._details:
            d.state, d.intention = S.PENDING, Intention.EXECUTE
            d.result = d.failure = d.revert_result = d.revert_failure = None
            if d.history is not None:
                d.history = History()
            if d.meta:
                d.meta.pop("wait", None)
                d.meta.pop("revert_tries", None)
            self.storage.touch(d)
        self.storage.flow.meta.pop("revert_all", None)
        self.storage.flow.meta.pop("unreverted", None)
        self.storage.flow.meta.pop(control.CANCELLED_KEY, None)
        self.storage.flow.meta.pop(control.SUSPENDED_KEY, None)
        self.storage.restore_flow_state(FlowState.PENDING)

    async def run(self) -> Mapping[str, Any]:
        """Run (or resume) the flow; returns every provided value by name.

        On failure the flow is reverted and the original exception re-raised
        (`WrappedFailure` when several atoms failed). Cancelling the caller
        cancels running atoms, leaves the flow SUSPENDED and re-raises
        `CancelledError`; a later `run()` resumes. When everything left to
        run waits for a signal or a timer, it returns what is provided so far
        with the flow WAITING (see `waiting_for`); a later `run()` resumes.
        """
        if self._running_flag:
            raise ExecutionError(f"flow {self.name!r} is already running")
        state = self.state
        if state is FlowState.SUCCESS:
            return self.storage.fetch_all()
        if state in ENDED:  # SUCCESS was handled above
            self._raise_outcome()
        self._running_flag = True
        self._suspend_requested = False
        self._cancel = None
        self._control_pending = False
        control.LIVE[self.flow_id] = self
        hooks = self.bus.hooks()
        self._caller.hooks = hooks
        try:
            if hooks:
                with contextlib.ExitStack() as scopes:
                    for hook in hooks:
                        scopes.enter_context(hook.flow_scope(self))
                    return await self._run(state)
            return await self._run(state)
        finally:
            if control.LIVE.get(self.flow_id) is self:
                del control.LIVE[self.flow_id]
            self._running_flag = False
            self._wakeup = None
            self._caller.hooks = []
            self.storage.lease_idle()

    async def _run(self, state: FlowState) -> Mapping[str, Any]:
        await self.storage.take_lease()
        if self.storage.backend is not None and self.storage.flow.version > 0:
            # A stored flow (resumed, or a posted job's): a suspend or cancel may have
            # been asked meanwhile.
            if self.storage.flow.meta.pop(control.SUSPENDED_KEY, None) is not None:
                self.storage.touch_flow()
            await self._take_control(stopped=state in (FlowState.SUSPENDED, FlowState.WAITING))
        if state in (FlowState.RUNNING, FlowState.SUSPENDING):
            # Left mid-run by a crash: the recorded way back is through RESUMING.
            self._set_flow(FlowState.RESUMING)
            self._set_flow(FlowState.SUSPENDED)
        if not self.bus.wanted:  # nobody listens: no pump to run
            self.bus.bind()
            return await self._drive()
        async with self.bus.running():
            return await self._drive()

    async def _drive(self) -> Mapping[str, Any]:
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
        async for event in events_of_run(self.run, self.add_listener):
            yield event

    # -- events and flow state ----------------------------------------------------------

    def _set_flow(self, new: FlowState) -> None:
        self.storage.set_flow_state(new)
        if self.bus.wanted:
            left = unreverted_of(self.storage.flow) if new in UNDONE_ENDS else ()
            details = {"unreverted": list(left)} if left else None
            self.bus.emit(Event("flow", self.name, new, details=details))

    # -- the loop ----------------------------------------------------------------

    def _halted(self) -> bool:
        """Start nothing new: a suspension was asked for, a revert failed, or a write."""
        return self._suspend_requested or self.scheduler.halted or bool(self._storage_error)

    async def _run_loop(self) -> None:
        self.scheduler.scan()
        if self._waits is not None:
            self._waits.parked.clear()
        self._done.clear()
        async with asyncio.TaskGroup() as tg:
            if self.storage.lease is None:  # not durable: no lease to keep
                await self._loop_body(tg)
                return
            with self.storage.heartbeat(tg, self.suspend, self._notice_control):
                await self._loop_body(tg)

    async def _loop_body(self, tg: asyncio.TaskGroup) -> None:
        done = self._done
        scheduler = self.scheduler
        running = scheduler.running
        storage = self.storage
        call = self._caller
        waits = self._waits
        while True:
            if self._control_pending:
                self._control_pending = False
                await self._take_control()
            if self._cancel is not None:
                request, self._cancel = self._cancel, None
                error = FlowCancelled(self.name, request["by"], request["reason"])
                parked = waits.parked if waits is not None else ()
                if not scheduler.cancel(request, Failure.from_exception(error), parked):
                    logger.warning(
                        "flow %r: cannot be cancelled past its irreversible atom; it goes on",
                        self.name,
                    )
            if done:
                scheduler.finished(done)  # empties it
            if waits is not None and waits.parked:
                scheduler.finished(waits.abandoned())
            if scheduler.retrying:
                scheduler.settle_retries()
            launch = await self._pick()
            reached = False
            if waits is not None and launch:
                now = await waits.clock() if waits.needs_clock(launch) else None
                reached = waits.arm(launch, now)
            if (launch or running or reached) and storage.pending:
                try:
                    await storage.commit()
                except StorageError as exc:
                    # Start nothing that is not recorded; let running atoms finish.
                    self._storage_error = exc
                    launch = []
                    if waits is not None:
                        waits.forget_reached()
            if reached and waits is not None:
                done.extend(await waits.check_reached())
            if launch:
                if len(launch) == 1 and not running:
                    running.add(launch[0][1])
                    done.append(await call(launch[0]))
                    continue
                for item in launch:
                    running.add(item[1])
                    tg.create_task(self._spawned(item))
                continue
            if not running:
                if done or scheduler.queued and not self._halted():
                    continue  # a wait ended, or a failure found while picking queued more work
                if waits is not None and waits.parked and not self._halted():
                    done.extend(await waits.recheck())
                    if done:
                        continue
                if self._control_pending:
                    continue  # a request came in: apply it before the run ends
                return
            if done:
                continue  # atoms finished while we were committing
            self._wakeup = asyncio.get_running_loop().create_future()
            await self._wakeup
            self._wakeup = None

    async def _spawned(self, launch: Launch) -> None:
        self._done.append(await self._caller(launch))
        self._wake()

    async def _pick(self) -> list[Launch]:
        """The scheduler's launches, with any deciders it stops at asked in line."""
        scheduler = self.scheduler
        if self._suspend_requested or scheduler.halted or self._storage_error:
            return []
        launch, decide = scheduler.pick()
        while decide is not None:
            rejected, error = None, None
            for spec, history in scheduler.deciders(decide):
                try:
                    verdict = spec.decider(history)
                    if inspect.isawaitable(verdict):
                        verdict = await verdict
                except Exception as exc:
                    error = Failure.from_exception(exc)
                    break
                if not verdict:
                    rejected = spec
                    break
            scheduler.decided(decide, rejected, error)
            more, decide = scheduler.pick()
            launch.extend(more)
        return launch

    # -- finishing --------------------------------------------------------------------

    async def _finish(self) -> Mapping[str, Any]:
        if self._storage_error is not None:
            error, self._storage_error = self._storage_error, None
            self._suspend_requested = False
            self._set_flow(FlowState.SUSPENDING)
            self._set_flow(FlowState.SUSPENDED)
            raise error
        suspended = self._suspend_requested and self.scheduler.work_left()
        self._suspend_requested = False
        self.storage.release_lease_on_commit()
        if suspended:
            self._set_flow(FlowState.SUSPENDING)
            self._set_flow(FlowState.SUSPENDED)
            await self.storage.commit()
            return self.storage.fetch_all()
        if self._waits is not None and self._waits.parked and not self.scheduler.halted:
            final, stuck = FlowState.WAITING, False  # nothing runs until it is resumed
        else:
            final, stuck = self.scheduler.verdict()
        previous = self.storage.flow.state
        self._set_flow(final)
        try:
            await self.storage.commit()
        except StorageError:
            # Claim nothing that was not written: undo the unrecorded end state
            # and stay SUSPENDED; the next run() writes what this one holds.
            self.storage.restore_flow_state(previous)
            self._set_flow(FlowState.SUSPENDING)
            self._set_flow(FlowState.SUSPENDED)
            raise
        if stuck:
            raise ExecutionError(f"flow {self.name!r} stopped with atoms left to run (engine bug)")
        if final not in (FlowState.SUCCESS, FlowState.WAITING):
            self._raise_outcome()
        return self.storage.fetch_all()

    def _raise_outcome(self) -> None:
        failures = self.storage.failures
        revert_failures = [d.revert_failure for d in self._details if d.revert_failure is not None]
        if revert_failures:
            error = revert_failures[0]
            exc = error.exception if error.exception is not None else None
            original = as_exception(failures)
            if exc is not None and original is not None and exc.__context__ is None:
                exc.__context__ = original
            error.reraise()
        original = as_exception(failures)
        if original is not None:
            raise original
        cancelled = control.cancellation(self.name, self.storage.flow.meta)
        if cancelled is not None:
            raise cancelled
        raise ExecutionError(f"flow {self.name!r} ended {self.state} without a recorded failure")

    async def _finish_cancelled(self) -> None:
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.cancel()
        state = self.storage.flow.state
        if state is FlowState.RUNNING:
            self._set_flow(FlowState.SUSPENDING)
            self._set_flow(FlowState.SUSPENDED)
        self.storage.release_lease_on_commit()
        try:
            await self.storage.commit_shielded()
        except StorageError as exc:
            # The canceller must still see CancelledError; the stored state stays
            # at its last commit, from which a later run() resumes.
            logger.warning("flow %r: could not record the suspension: %s", self.name, exc)


async def run(
    flow: Flow | Atom,
    *,
    store: Mapping[str, Any] | None = None,
    max_concurrency: int | None = None,
    listeners: Iterable[Listener] = (),
    defer_reverts: bool | None = None,
    target: str | Atom | None = None,
    backend: Backend | None = None,
) -> Mapping[str, Any]:
    """Run a flow once; returns every provided value by name.

    State is kept in memory unless a `backend` is given. `defer_reverts` is
    deprecated and ignored, as for `Engine`.
    """
    if defer_reverts is not None:
        warn_defer_reverts()
    engine = Engine(
        flow,
        store=store,
        max_concurrency=max_concurrency,
        listeners=listeners,
        target=target,
        backend=backend,
    )
    return await engine.run()


async def resume(flow_id: str, *, backend: Backend, **options: Any) -> Mapping[str, Any]:
    """Load the stored flow `flow_id` (see `Engine.load`) and run it to the end."""
    engine = await Engine.load(flow_id, backend=backend, **options)
    return await engine.run()
