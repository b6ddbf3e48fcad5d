"""`ZagService`: zag-async inside a long-running application, such as a web service.

    async with ZagService(backend="sqlite+aiosqlite:///app.db") as zag:
        status = await zag.run("myapp.flows:order", store={"item": "book"})  # await to the end
        flow_id = await zag.start("myapp.flows:order", store={"item": "pen"})  # background
        job = await zag.post("order", "myapp.flows:order", store={"item": "lamp"})  # hand off
        print((await zag.job_status(job.uuid)).state)

On a SQL backend the job board lives in the same database and the service
runs a conductor, so one process on one SQLite file survives its own restarts:
a flow started in the background is a job on that board, and when the service
opens it takes back what its previous incarnation left (jobs it held, flows it
ran, interrupted by a crash or a shutdown) and finishes them.

One object, configured by URLs, opens the flow-state backend and the job
board, and can run a conductor and remote workers in the application's
process, all in one task group. Closing it stops taking work, suspends every
flow it drives (those awaited by callers through `run`, those it started in
the background, its conductor's jobs, which go back on the board), waits for
them to reach SUSPENDED and then closes the board and the backend. Nothing is
lost at shutdown: a suspended flow's durable record lets `zag.resume` or
another conductor finish it, and finished atoms are not run again.

`zag_async.contrib.fastapi` and `zag_async.contrib.aiohttp` tie its lifetime
to an application's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from .atom import Atom
from .backoff import Backoff
from .engine import Engine, Executor
from .errors import (
    ConfigurationError,
    ExecutionError,
    FlowBusy,
    FlowDefinitionError,
    NotFound,
    StorageError,
)
from .factory import FactoryRef
from .flow import Flow
from .jobs import JobBoard
from .jobs import connect as connect_board
from .jobs.conductor import Conductor
from .persistence import Backend
from .persistence import connect as connect_backend
from .persistence.leases import engine_name
from .service_config import ServiceConfig, worker_class_or_explain
from .states import FlowState
from .status import FlowStatus, JobStatus, read_flow_status, read_job_status
from .waiting import job_of, signalled, wake_delay
from .waiting import signal as send_signal

if TYPE_CHECKING:
    from .jobs.base import Job
    from .models import Signal
    from .workers.amqp import Worker

__all__ = ["FlowStatus", "JobStatus", "ZagService"]

logger = logging.getLogger("zag_async.service")

#: The logbook of the flows a service runs itself (`run`, `start` without a board),
#: by which it finds those to recover.
SERVICE_LOGBOOK = str(uuid.uuid5(uuid.NAMESPACE_URL, "zag-async:service-flows"))

#: States of a flow whose engine stopped without reaching an end or a suspension.
_INTERRUPTED = (FlowState.RUNNING, FlowState.SUSPENDING, FlowState.RESUMING)

FlowFactory = Callable[..., Flow | Atom] | str


class ZagService:
    """The flow-state backend, the job board and optional in-app conductor and workers,
    opened and closed together. Use as `async with`; it opens once.

    Args:
        backend: where flow state lives: `memory://[NAME]`, `sqlite+aiosqlite:///path.db`,
            `postgresql+asyncpg://...` (see `zag_async.persistence.connect`).
        board: the job board URL (`memory://[NAME]`, `sqlite+aiosqlite:///...`,
            `postgresql+asyncpg://...`, `zookeeper://host:2181/path`), or None for
            none (then `post`, `conductor` and background jobs are unavailable).
            By default ("auto") the backend's own database on a SQL backend, so
            jobs are as durable as flows, and `memory://` on a memory backend.
        conductor: True to run a conductor in this process that takes any job on
            the board, or the keyword arguments for one (`{"max_jobs": 4}`; see
            `zag.Conductor`), or False to run only this service's own jobs
            (`start()`, and work taken back from an earlier incarnation). By
            default (None) True on a SQL board, False otherwise.
        workers: remote workers to serve in this process, as `(topic, tasks)` pairs;
            needs `broker`.
        broker: the RabbitMQ URL the workers take requests from.
        executor: where the tasks of every flow this service runs go (for example a
            `zag.RemoteExecutor`); one that is an async context manager is opened
            and closed with the service, so pass it unopened.
        shutdown_timeout: seconds closing waits for running atoms to finish before
            cancelling them (a cancelled atom runs again when its flow resumes).
        name: this service's name: the owner of its job claims and flow leases. By
            default it names this host and process, which is enough for a restart on
            the same machine to take its own work back at once; give a stable name
            (unique among live replicas) to do so across machines too.
        recover_every: seconds between looks for this service's flows whose engine
            died (their lease lapsed), which it then finishes.
    """

    def __init__(
        self,
        *,
        backend: str = "memory://",
        board: str | None = "auto",
        conductor: bool | Mapping[str, Any] | None = None,
        workers: Iterable[tuple[str, Iterable[Atom]]] = (),
        broker: str | None = None,
        executor: Executor | None = None,
        shutdown_timeout: float = 10.0,
        name: str | None = None,
        recover_every: float = 10.0,
    ) -> None:
        config = ServiceConfig.of(
            backend=backend,
            board=board,
            conductor=conductor,
            workers=workers,
            broker=broker,
            shutdown_timeout=shutdown_timeout,
            recover_every=recover_every,
        )
        self.config = config
        self.backend_url = config.backend
        self.board_url = config.board
        self.broker = broker
        self.shutdown_timeout = config.shutdown_timeout
        self.name = name or engine_name()
        self.recover_every = config.recover_every
        self._conductor_options = config.conductor
        self._worker_specs = config.workers
        self._executor = executor
        self._backend: Backend | None = None
        self._board: JobBoard | None = None
        self._conductor: Conductor | None = None
        self._workers: list[Worker] = []
        self._stack = AsyncExitStack()
        self._tg: asyncio.TaskGroup | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        #: Engines running now, with the task awaiting each (a caller's, or ours).
        self._live: dict[Engine, asyncio.Task[Any] | None] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self._started: set[str] = set()  # flows of the jobs start() posted
        self._opened = False
        self._closing = False
        self._closed = asyncio.Event()

    def __repr__(self) -> str:
        state = "closed" if self._closed.is_set() else "closing" if self._closing else "open"
        if not self._opened:
            state = "new"
        return f"<ZagService {self.name} {state} backend={self.backend_url} board={self.board_url}>"

    # -- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._opened:
            raise ConfigurationError(f"zag service {self.name} was already opened; make a new one")
        self._opened = True
        stack = self._stack
        try:
            self._backend = await stack.enter_async_context(connect_backend(self.backend_url))
            if self.board_url is not None:
                self._board = await stack.enter_async_context(
                    connect_board(self.board_url, backend=self._backend)
                )
            if isinstance(self._executor, AbstractAsyncContextManager):
                await stack.enter_async_context(self._executor)
            if self._worker_specs:
                worker_class = worker_class_or_explain()
                for topic, tasks in self._worker_specs:
                    worker = worker_class(self.broker or "", topic=topic, tasks=tasks)
                    self._workers.append(await stack.enter_async_context(worker))
            if self._board is not None:
                # Always a conductor with a board: it runs this service's own jobs
                # (start(), work taken back at open) and, if asked, any job.
                options = {"name": self.name, **(self._conductor_options or {})}
                options["claim_new"] = self._conductor_options is not None
                if self._executor is not None:
                    engine_options = dict(options.get("engine_options") or {})
                    engine_options.setdefault("executor", self._executor)
                    options["engine_options"] = engine_options
                self._conductor = Conductor(self._board, backend=self._backend, **options)
            ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            # One owned root task, not a task group entered here: the group would
            # live across the host app's own code (a lifespan's yield), and a
            # failing conductor would cancel the app's task instead of being
            # logged while the service stops taking work. aclose() awaits it.
            self._supervisor = asyncio.create_task(
                self._supervise(ready), name=f"zag-service-{self.name}"
            )
            self._supervisor.add_done_callback(self._supervisor_done)
            await asyncio.wait({ready, self._supervisor}, return_when=asyncio.FIRST_COMPLETED)
            if self._supervisor.done():
                self._supervisor.result()  # raise what stopped it
        except BaseException:
            self._closing = True
            if self._supervisor is not None and not self._supervisor.done():
                self._stop.set()
                with contextlib.suppress(BaseException):
                    await self._supervisor
            await stack.aclose()
            self._closed.set()
            raise
        logger.info("zag service %s open (%s, %s)", self.name, self.backend_url, self.board_url)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _supervise(self, ready: asyncio.Future[None]) -> None:
        """The service's one task group: the conductor, the workers and background flows."""
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            if self._conductor is not None:
                tg.create_task(self._conductor.run(), name=f"zag-conductor-{self._conductor.name}")
            for worker in self._workers:
                tg.create_task(worker.serve(), name=f"zag-worker-{worker.name}")
            tg.create_task(self._recovery(tg), name=f"zag-recovery-{self.name}")
            ready.set_result(None)
            await self._stop.wait()
            # Leaving the group waits for the conductor, the workers and background flows.

    async def aclose(self) -> None:
        """Stop taking work, suspend every running flow, then close the board and backend.

        Running atoms get `shutdown_timeout` seconds to finish; then they are
        cancelled (their flows still end SUSPENDED). Idempotent.
        """
        if self._closing:
            if self._opened:
                await self._closed.wait()
            return
        self._closing = True
        if not self._opened:
            self._closed.set()
            return
        supervisor = self._supervisor
        assert supervisor is not None
        try:
            if self._conductor is not None:
                self._conductor.stop()  # suspends its flows; their jobs go back on the board
            for worker in self._workers:
                worker.stop()  # requests in flight are answered first
            for engine in list(self._live):
                engine.suspend()
            self._stop.set()
            try:
                async with asyncio.timeout(self.shutdown_timeout):
                    await asyncio.wait({supervisor})
                    await self._idle.wait()
            except TimeoutError:
                logger.warning(
                    "zag service %s: flows still running after %gs; cancelling them "
                    "(they stay SUSPENDED and resume later)",
                    self.name,
                    self.shutdown_timeout,
                )
        finally:
            # Past the timeout, or when closing is itself cancelled: cancel what still
            # runs (its flows end SUSPENDED) before the board and the database go away.
            if not (supervisor.done() and self._idle.is_set()):
                supervisor.cancel()
                for task in self._live.values():
                    if task is not None:
                        task.cancel()
                await asyncio.wait({supervisor})
                await self._idle.wait()
            try:
                await self._stack.aclose()
            finally:
                self._closed.set()
                logger.info("zag service %s closed", self.name)
        if not supervisor.cancelled() and supervisor.exception() is not None:
            supervisor.result()  # surface what stopped the conductor or a worker

    def _supervisor_done(self, task: asyncio.Task[None]) -> None:
        if self._closing or task.cancelled() or task.exception() is None:
            return
        logger.error(
            "zag service %s: its conductor or a worker failed; it takes no more work",
            self.name,
            exc_info=task.exception(),
        )

    def _check_open(self) -> None:
        if not self._opened:
            raise ExecutionError(f"zag service {self.name} is not open; use 'async with' first")
        if self._closing:
            raise ExecutionError(f"zag service {self.name} is shutting down; it takes no new work")
        supervisor = self._supervisor
        if supervisor is not None and supervisor.done():
            raise ExecutionError(
                f"zag service {self.name} stopped: its conductor or a worker failed "
                f"({supervisor.exception() if not supervisor.cancelled() else 'cancelled'})"
            )

    # -- what it holds -----------------------------------------------------------------

    @property
    def closing(self) -> bool:
        """True from the moment closing starts (it takes no new work from then on)."""
        return self._closing

    @property
    def stopped(self) -> bool:
        """True once the task group running the conductor, the workers and background
        flows has ended: while closing, or early because one of them failed (then the
        service takes no more work and `aclose()` raises what failed)."""
        return self._supervisor is not None and self._supervisor.done()

    @property
    def backend(self) -> Backend:
        """The open flow-state backend."""
        if self._backend is None:
            raise ExecutionError(f"zag service {self.name} is not open")
        return self._backend

    @property
    def board(self) -> JobBoard:
        """The open job board."""
        if self.board_url is None:
            raise ConfigurationError(f"zag service {self.name} has no job board (board=None)")
        if self._board is None:
            raise ExecutionError(f"zag service {self.name} is not open")
        return self._board

    @property
    def conductor(self) -> Conductor | None:
        """The in-app conductor (there is one whenever the service has a board; see
        `conductor=` for whether it takes any job or only the service's own)."""
        return self._conductor

    @property
    def workers(self) -> list[Worker]:
        """The in-app remote workers."""
        return list(self._workers)

    @property
    def running_flows(self) -> list[str]:
        """Ids of the flows this service runs now: awaited through `run`, started
        with `start` (its own jobs) and recovered. Not counting other jobs its
        conductor took from the board.

        A flow awaited through `run` is stored once its first atom starts, so
        `flow_status` may not find it for a moment.
        """
        own = [engine.flow_id for engine in self._live]
        if self._conductor is not None:
            own += [f for f in self._conductor.running_flows if f in self._started]
        return own

    # -- running flows -------------------------------------------------------------------

    def _engine(
        self,
        factory: FlowFactory,
        args: Sequence[Any],
        kwargs: Mapping[str, Any] | None,
        store: Mapping[str, Any] | None,
        options: dict[str, Any],
    ) -> Engine:
        if self._executor is not None:
            options.setdefault("executor", self._executor)
        options.setdefault("owner", self.name)
        # The service's flows share a logbook, so recovery finds them by one index.
        options.setdefault("logbook", SERVICE_LOGBOOK)
        return Engine.from_factory(
            factory, args=args, kwargs=kwargs, store=store, backend=self.backend, **options
        )

    async def run(
        self,
        factory: FlowFactory,
        *args: Any,
        kwargs: Mapping[str, Any] | None = None,
        store: Mapping[str, Any] | None = None,
        **engine_options: Any,
    ) -> FlowStatus:
        """Run the flow `factory(*args, **kwargs)` builds to its end, in the caller's task.

        Returns its status: SUCCESS with `results`, REVERTED or FAILURE with
        `error` (the flow's own failure is not raised), or SUSPENDED when the
        service shut down meanwhile (resume it with `resume(flow_id)`).
        Cancelling the caller leaves the flow SUSPENDED, as with `Engine.run`.
        Raises only what keeps the flow from running or being recorded
        (a bad factory, `StorageError`, a closed service).
        """
        self._check_open()
        engine = self._engine(factory, args, kwargs, store, dict(engine_options))
        return await self._drive(engine, asyncio.current_task())

    async def start(
        self,
        factory: FlowFactory,
        *args: Any,
        kwargs: Mapping[str, Any] | None = None,
        store: Mapping[str, Any] | None = None,
        **engine_options: Any,
    ) -> str:
        """Start the flow in the background and return its id at once.

        With a job board the flow is a job on it, claimed and run by this
        service at once: a shutdown hands it back, and after a crash or a
        restart this service (or another replica's conductor) takes it again
        and finishes it. The flow record is written before this returns, so
        `flow_status(id)` finds it. Without a board (board=None) the flow runs
        in the service's task group and is recovered like `run`'s flows.
        """
        self._check_open()
        if self._board is None:
            engine = self._engine(factory, args, kwargs, store, dict(engine_options))
            await engine.storage.commit()  # the record exists before anyone asks for it
            self._check_open()
            assert self._tg is not None
            self._tg.create_task(self._background(engine), name=f"zag-flow-{engine.flow_id}")
            return engine.flow_id
        if engine_options:
            raise ConfigurationError(
                f"start() runs the flow as a job, and engine options cannot travel with a job "
                f"(got {sorted(engine_options)}); give them to the service's conductor: "
                f"conductor={{'engine_options': {{...}}}}"
            )
        name = factory if isinstance(factory, str) else getattr(factory, "__name__", "flow")
        job = await self._board.post(name, factory, *args, kwargs=kwargs, store=store)
        assert self._conductor is not None
        self._started.add(job.flow_id)
        self._conductor.adopt(job)
        return job.flow_id

    async def resume(self, flow_id: str, **engine_options: Any) -> FlowStatus:
        """Resume a stored flow (one suspended at shutdown, say) and run it to its end.

        The flow is claimed for this service first, so an engine elsewhere
        still holding it can no longer write. Returns like `run`.
        """
        self._check_open()
        engine = await self._load(flow_id, engine_options)
        self._check_open()
        return await self._drive(engine, asyncio.current_task())

    async def _load(self, flow_id: str, engine_options: Mapping[str, Any] = {}) -> Engine:  # noqa: B006
        """An engine resuming `flow_id` for this service (its owner, its executor)."""
        options = {"owner": self.name, **engine_options}
        if self._executor is not None:
            options.setdefault("executor", self._executor)
        return await Engine.load(flow_id, backend=self.backend, **options)

    async def _recovery(self, tg: asyncio.TaskGroup) -> None:
        """Finish this service's flows that no engine runs: at open, those a crash or
        a shutdown left (SUSPENDED included); then, every `recover_every` seconds,
        those whose engine died (a replica's, once its lease lapsed)."""
        states = [*_INTERRUPTED, FlowState.SUSPENDED]
        while not self._closing:
            try:
                await self._recover(tg, states)
            except StorageError as exc:
                logger.warning(
                    "zag service %s: could not look for flows to recover: %s", self.name, exc
                )
            states = list(_INTERRUPTED)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.recover_every):
                    await self._stop.wait()

    async def _recover(self, tg: asyncio.TaskGroup, states: list[FlowState]) -> None:
        live = {engine.flow_id for engine in self._live}
        for summary in await self.backend.list_flows(logbook=SERVICE_LOGBOOK, states=states):
            if summary.uuid in live or self._closing:
                continue
            try:
                engine = await self._load(summary.uuid)
            except FlowBusy:
                continue  # a live engine elsewhere runs it
            except (ConfigurationError, FlowDefinitionError, ImportError, NotFound) as exc:
                logger.error(
                    "zag service %s: cannot recover flow %s: %s", self.name, summary.uuid, exc
                )
                continue
            logger.info(
                "zag service %s: recovering flow %r (%s), left %s",
                self.name,
                summary.name,
                summary.uuid,
                summary.state,
            )
            tg.create_task(self._background(engine), name=f"zag-flow-{summary.uuid}")

    async def _background(self, engine: Engine) -> None:
        try:
            await self._drive(engine, None)
        except Exception:
            # The record says where the flow stopped; a background failure must
            # not take the conductor and the other flows down with it.
            logger.exception("zag service %s: flow %s stopped", self.name, engine.flow_id)

    async def _drive(self, engine: Engine, task: asyncio.Task[Any] | None) -> FlowStatus:
        """Run an engine, registered so that closing the service suspends it."""
        if self._closing:  # closed before the flow could start: it stays resumable
            return FlowStatus.of(engine.storage.flow)
        self._live[engine] = task
        self._idle.clear()
        results: Mapping[str, Any] | None = None
        try:
            results = await engine.run()
            if engine.state is FlowState.WAITING:
                await self._park(engine)
        except Exception:
            if engine.state not in (
                FlowState.REVERTED,
                FlowState.FAILURE,
                FlowState.UNCOMPENSATED,
                FlowState.STUCK_PAST_PIVOT,
            ):
                raise  # not the flow's own failure (storage trouble, a bug)
        finally:
            del self._live[engine]
            if not self._live:
                self._idle.set()
        return FlowStatus.of(
            engine.storage.flow, results if engine.state is FlowState.SUCCESS else None
        )

    async def _park(self, engine: Engine) -> None:
        """Hand a WAITING flow to the board as a parked job, so its deadline or a
        signal resumes it through any conductor (this one, or a replica's) and
        nothing here holds it meanwhile."""
        if self._board is None or self._conductor is None:
            return  # no board: a signal sent through this service resumes it (`_wake`)
        detail = engine.storage.flow
        factory = detail.meta.get("factory")
        if factory is None:
            logger.warning(
                "zag service %s: flow %s waits but was not built from a factory; only "
                "zag.resume can finish it",
                self.name,
                detail.uuid,
            )
            return
        waits = engine.waiting_for
        delay = await wake_delay(self.backend, waits)
        job = await self._board.post_waiting(
            detail.uuid, detail.name, FactoryRef.from_dict(factory), delay
        )
        self._conductor.track_parked(job.uuid, delay)
        if await signalled(self.backend, detail.uuid, waits):
            await self._conductor.wake(job.uuid)

    # -- signals ---------------------------------------------------------------------------

    async def signal(
        self, flow_id: str, event: str, payload: Any = None, *, signal_id: str | None = None
    ) -> Signal:
        """Send a signal to a flow (see `zag.signal`) and wake the flow in the background.

        Returns once the signal is stored. With a job board the flow's parked job
        is woken, so this service's conductor (or a replica's) resumes it; an
        engine running it now takes the signal before it stops, or its job is
        woken as it is parked. Without a board the flow is resumed in this
        service's task group as soon as no engine holds it.
        """
        self._check_open()
        conductor = self._conductor
        stored = await send_signal(
            flow_id, event, payload, backend=self.backend, signal_id=signal_id
        )
        self._check_open()
        if conductor is not None:
            row = await self.backend.load_flow_row(flow_id)
            await conductor.wake(job_of(self.backend.flow_from_row(row)))
            return stored
        assert self._tg is not None
        self._tg.create_task(self._wake(flow_id), name=f"zag-wake-{flow_id}")
        return stored

    async def _wake(self, flow_id: str) -> None:
        """Resume a flow that was sent a signal, once no engine holds it (bounded by
        twice the lease term: a dead engine's lease lapses within one)."""
        within = 2 * self.backend.lease_seconds
        async for attempt in Backoff(first=0.05, cap=0.5, within=within).attempts():
            if self._closing:
                return  # the flow stays WAITING with its signal pending; a resume takes it
            if any(engine.flow_id == flow_id for engine in self._live):
                continue  # running here: wake it again once that run stops
            try:
                engine = await self._load(flow_id)
            except FlowBusy:
                if attempt.last:
                    logger.warning(
                        "zag service %s: flow %s was sent a signal but stays held by "
                        "another engine",
                        self.name,
                        flow_id,
                    )
                continue
            except (
                ConfigurationError,
                FlowDefinitionError,
                ImportError,
                NotFound,
                StorageError,
            ) as exc:
                logger.error("zag service %s: cannot wake flow %s: %s", self.name, flow_id, exc)
                return
            await self._background(engine)
            return

    # -- jobs ------------------------------------------------------------------------------

    async def post(
        self,
        name: str,
        factory: FlowFactory,
        *args: Any,
        kwargs: Mapping[str, Any] | None = None,
        store: Mapping[str, Any] | None = None,
        priority: int = 0,
        delay: float = 0.0,
        idempotency_key: str | None = None,
    ) -> Job:
        """Post a job on the board (see `JobBoard.post`); `job.uuid` and `job.flow_id`
        are known at once. A conductor (this service's or any other) runs it."""
        self._check_open()
        return await self.board.post(
            name,
            factory,
            *args,
            kwargs=kwargs,
            store=store,
            priority=priority,
            delay=delay,
            idempotency_key=idempotency_key,
        )

    # -- status ------------------------------------------------------------------------------

    async def flow_status(self, flow_id: str) -> FlowStatus:
        """The status of a stored flow (`NotFound` if there is none with this id)."""
        return await read_flow_status(self.backend, flow_id)

    async def job_status(self, job_id: str) -> JobStatus:
        """The status of a posted job (`JobNotFound` if the board never had it)."""
        return await read_job_status(self.board, self.backend, job_id)
