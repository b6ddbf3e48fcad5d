"""Conductor: claims jobs from a board and runs their flows to the end.

    async with zag.Conductor(board, backend=backend, name="c1", max_jobs=4) as conductor:
        await conductor.run()          # until conductor.stop()

For each claimed job the conductor rebuilds the flow from the job's flow
record, claims that record with the claim's fencing token (so an owner that
lost its claim can no longer write), runs the engine and then:

- consumes the job when the flow ends SUCCESS or cleanly REVERTED;
- parks it when its flow is left WAITING: the job is given back due at the
  earliest deadline of its waits (never, with none), and a signal wakes it
  (`JobBoard.wake`), so any conductor resumes the flow and nothing is held
  meanwhile. A signal that came while the job was claimed found nothing to
  wake, so after parking the conductor looks for one and wakes the job itself;
  and every `RECOVER_EVERY` seconds it sweeps the flow database for WAITING
  flows with signals not yet taken (one sent without a board) and wakes them;
- abandons it (another conductor resumes it) on storage or board trouble and
  on `stop()`;
- trashes it when its flow ends FAILURE, UNCOMPENSATED or STUCK_PAST_PIVOT (needs a person), or
  when building its flow failed `build_attempts` times, counted on the job
  itself so every conductor sees the same count.

Recovery needs no user code: when `run()` starts, claims left by this
conductor's name (a restarted process with a stable name) or by a process of
this machine that has died are given back at once (`JobBoard.release_owner`)
and taken again, instead of waiting for their leases to run out; claims of
dead conductors elsewhere come back when their leases expire (SQL boards) or
their sessions end (ZooKeeper).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Self

from ..control import SUSPENDED_KEY
from ..engine import Engine
from ..errors import (
    BoardUnavailable,
    ClaimLost,
    ConcurrentUpdate,
    ConfigurationError,
    FlowDefinitionError,
    JobError,
    JobNotFound,
    NotClaimable,
    NotFound,
    NotYetDue,
    StorageError,
    ZagError,
)
from ..events import Listener
from ..failure import error_text
from ..persistence.base import Backend
from ..persistence.leases import abandoned, engine_name
from ..states import FlowState
from ..status import job_outcome
from ..waiting import job_of, signalled, wake_delay
from .base import Claim, Job, JobBoard, JobOutcome, JobState, pick_backend

__all__ = ["Conductor", "ConductorEvent"]

# The name from before the move into jobs/: logging settings that name it still apply.
logger = logging.getLogger("zag_async.conductor")

#: Seconds between looks for claims of processes of this machine that died (on boards
#: whose claims outlive their holder: SQL leases), so a live replica takes them over
#: at once instead of when their leases run out.
RECOVER_EVERY = 10.0

EventKind = Literal["claimed", "started", "consumed", "abandoned", "trashed", "lost", "parked"]


@dataclass(frozen=True)
class ConductorEvent:
    """Something the conductor did with a job."""

    kind: EventKind
    conductor: str
    job: Job
    detail: str | None = None
    outcome: JobOutcome | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


ConductorListener = Callable[[ConductorEvent], None]


class Conductor:
    """Claims jobs in priority order and runs them, at most `max_jobs` at a time.

    Args:
        board: the job board to take jobs from.
        backend: the flow-state backend the jobs' flow records live in.
        name: this conductor's name (owner of its claims); defaults to one that names
            this host and process, so a restart on the same machine recognises it.
        max_jobs: how many jobs to run at once.
        build_attempts: trash a job after this many failed attempts to build
            its flow (across all conductors).
        listeners: callables receiving every `ConductorEvent`.
        engine_listeners: a function of the job returning listeners for its
            engine's events (per-job listener factory).
        engine_options: extra keyword arguments for each job's `Engine`.
        claim_new: False to run only the jobs given to `adopt()` and those recovered
            from this conductor's own earlier claims (an application's own work),
            not any job on the board.
    """

    def __init__(
        self,
        board: JobBoard,
        *,
        backend: Backend | None = None,
        persistence: Backend | None = None,
        name: str | None = None,
        max_jobs: int = 1,
        build_attempts: int = 3,
        listeners: Iterable[ConductorListener] = (),
        engine_listeners: Callable[[Job], Iterable[Listener]] | None = None,
        engine_options: Mapping[str, Any] | None = None,
        claim_new: bool = True,
    ) -> None:
        if not isinstance(max_jobs, int) or max_jobs < 1:
            raise ConfigurationError(f"max_jobs must be a whole number >= 1, got {max_jobs!r}")
        if not isinstance(build_attempts, int) or build_attempts < 1:
            raise ConfigurationError(f"build_attempts must be >= 1, got {build_attempts!r}")
        self.board = board
        self.backend = pick_backend("Conductor", backend, persistence)
        self.name = name or engine_name()
        self.claim_new = claim_new
        self._adopted: set[str] = set()  # jobs to claim even when not claiming new ones
        self._swept: dict[str, int] = {}  # flow -> newest pending signal already woken for
        # Jobs this conductor parked, by when they are due (loop time), when it takes
        # only its own jobs: nobody else would run them.
        self._parked: dict[str, float] = {}
        self.max_jobs = max_jobs
        self.build_attempts = build_attempts
        self._listeners = list(listeners)
        self._engine_listeners = engine_listeners
        self._engine_options = dict(engine_options or {})
        self._active: dict[str, tuple[Claim, asyncio.Task[None], Engine | None]] = {}
        self._wake = asyncio.Event()
        self._stopping = False
        self._stopped = asyncio.Event()
        self._running = False

    @property
    def persistence(self) -> Backend:
        """Deprecated name of `backend`."""
        warnings.warn("Conductor.persistence is deprecated; use .backend", DeprecationWarning, 2)
        return self.backend

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        await self.wait_stopped()

    # -- control -------------------------------------------------------------------

    def stop(self) -> None:
        """Stop claiming; running flows reach a safe point and their jobs are abandoned."""
        self._stopping = True
        for _claim, _task, engine in list(self._active.values()):
            if engine is not None:
                engine.suspend()
        self._wake.set()

    async def wait_stopped(self) -> None:
        if self._running:
            await self._stopped.wait()

    @property
    def running(self) -> bool:
        """True while `run()` is claiming jobs or handing them back."""
        return self._running

    @property
    def running_jobs(self) -> list[Job]:
        return [claim.job for claim, _task, _engine in self._active.values()]

    def adopt(self, job: Job | str) -> None:
        """Claim and run this job as soon as a slot is free (whatever `claim_new` says)."""
        job_id = job if isinstance(job, str) else job.uuid
        self._parked.pop(job_id, None)
        self._adopted.add(job_id)
        self._wake.set()

    def track_parked(self, job_id: str, delay: float | None) -> None:
        """Remember a job parked for `delay` seconds (None: until woken) when this
        conductor takes only its own jobs: nobody else would take it back."""
        if not self.claim_new:
            due = math.inf if delay is None else asyncio.get_running_loop().time() + delay
            self._parked[job_id] = due
            self._wake.set()

    async def wake(self, job_id: str) -> bool:
        """Wake a parked job (its flow was sent a signal) and, when this conductor
        takes only its own jobs, take it back (`adopt`)."""
        woken = await self.board.wake(job_id)
        if woken and not self.claim_new:
            self.adopt(job_id)
        return woken

    @property
    def running_flows(self) -> list[str]:
        """Ids of the flows of the jobs running now."""
        return [claim.job.flow_id for claim, _task, _engine in self._active.values()]

    def _emit(self, kind: EventKind, job: Job, detail: str | None = None, **kw: Any) -> None:
        event = ConductorEvent(kind, self.name, job, detail, **kw)
        log = logger.warning if kind in ("trashed", "lost") else logger.info
        log(
            "conductor %s: %s job %s (%s)%s",
            self.name,
            kind,
            job.name,
            job.uuid,
            f": {detail}" if detail else "",
        )
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                logger.exception("conductor listener %r failed", listener)

    # -- the loop ------------------------------------------------------------------

    async def run(self) -> None:
        """Claim and run jobs until `stop()`; returns when every job has been handed back."""
        if self._running:
            raise ConfigurationError(f"conductor {self.name!r} is already running")
        self._running = True
        self._stopped.clear()
        unsubscribe = self.board.subscribe(self._wake.set)
        unsubscribe_lost = self.board.on_claims_lost(self._drop_lost_claims)
        loop = asyncio.get_running_loop()
        try:
            await self._recover()
            await self._sweep_signals()
            recovered = loop.time()
            async with asyncio.TaskGroup() as tg:
                while not self._stopping:
                    self._wake.clear()
                    if loop.time() - recovered >= RECOVER_EVERY:
                        await self._recover()  # a process of this machine may have died
                        await self._sweep_signals()
                        recovered = loop.time()
                    delay = await self._claim_some(tg)
                    if self._stopping:
                        break
                    delay = RECOVER_EVERY if delay is None else min(delay, RECOVER_EVERY)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await self._wake.wait()
                # Leaving the task group waits for running jobs to hand their work back.
        finally:
            unsubscribe()
            unsubscribe_lost()
            self._running = False
            self._stopped.set()

    async def _recover(self) -> None:
        """Take back at once the claims this name or a dead process of this machine left
        (at start, then every `RECOVER_EVERY` seconds on boards that can release them).

        A dead process is known by the default conductor name (host and process);
        claims of a conductor given a name of its own come back when their leases
        run out, or at once when a conductor of that name starts again."""
        if not self.board.releases_owners:
            return
        try:
            owners = await self.board.claim_owners()
            left = {o for o in owners if o == self.name or abandoned(o)}
            for owner in sorted(left):
                released = await self.board.release_owner(owner)
                self._adopted.update(released)
                if released:
                    logger.info(
                        "conductor %s: took back %d job(s) left by %s",
                        self.name,
                        len(released),
                        owner,
                    )
        except (BoardUnavailable, JobNotFound) as exc:
            # Not fatal: those claims come back when their leases run out.
            logger.warning("conductor %s: could not recover earlier claims: %s", self.name, exc)

    async def _sweep_signals(self) -> None:
        """Wake the jobs of WAITING flows that have signals no wait took (sent
        without a board, or lost to a crash between storing and waking); each
        newest signal once, so a signal for a later wait does not wake its flow
        over and over."""
        try:
            pending = await self.backend.signalled_flows()
        except StorageError as exc:
            logger.warning("conductor %s: could not look for signals: %s", self.name, exc)
            return
        self._swept = {f: seq for f, seq in self._swept.items() if f in pending}
        running = set(self.running_flows)
        for flow_id, seq in pending.items():
            if self._stopping or self._swept.get(flow_id) == seq or flow_id in running:
                continue
            try:
                row = await self.backend.load_flow_row(flow_id)
                if await self.wake(job_of(self.backend.flow_from_row(row))):
                    logger.info("conductor %s: woke flow %s for its signals", self.name, flow_id)
            except (StorageError, JobError) as exc:
                logger.warning("conductor %s: could not wake flow %s: %s", self.name, flow_id, exc)
                continue
            self._swept[flow_id] = seq

    async def _claim_some(self, tg: asyncio.TaskGroup) -> float | None:
        """Claim jobs into free slots; returns seconds until a delayed job is due."""
        free = self.max_jobs - len(self._active)
        next_due: float | None = None
        if self._parked:
            now = asyncio.get_running_loop().time()
            for job_id, due in list(self._parked.items()):
                if due <= now:
                    self.adopt(job_id)
                elif due < math.inf:
                    next_due = due - now if next_due is None else min(next_due, due - now)
            await self._adopt_woken()
        for job_id in sorted(self._adopted):  # asked for by name: claimed directly
            if free <= 0 or self._stopping:
                return next_due
            if job_id in self._active:
                self._adopted.discard(job_id)
                continue
            due_in = await self._claim_one(tg, job_id)
            if due_in is None:
                free -= job_id in self._active
            else:
                next_due = due_in if next_due is None else min(next_due, due_in)
        if free <= 0 or not self.claim_new:
            return next_due
        try:
            # A few more than the free slots: some will be taken by others or not due.
            # Due ones only: parked jobs (flows that wait) could fill any limit.
            jobs = await self.board.jobs(
                state=JobState.UNCLAIMED, include_delayed=False, limit=4 * free + 16
            )
        except BoardUnavailable as exc:
            logger.warning("conductor %s: board unavailable: %s", self.name, exc)
            return 1.0
        now = self.board.estimate_now()
        for job in jobs:
            if free <= 0 or self._stopping:
                break
            if job.uuid in self._active:
                continue
            if job.due_at > now:
                wait = job.due_at - now
                next_due = wait if next_due is None else min(next_due, wait)
                continue
            due_in = await self._claim_one(tg, job)
            if due_in is not None:
                next_due = due_in if next_due is None else min(next_due, due_in)
            elif job.uuid in self._active:
                free -= 1
        if free > 0 and not self._stopping:
            try:
                due_in = await self.board.next_due()
            except BoardUnavailable:
                due_in = 1.0
            if due_in is not None:
                next_due = due_in if next_due is None else min(next_due, due_in)
        return next_due

    async def _adopt_woken(self) -> None:
        """Take back those of our parked jobs that someone else woke (a signal sent
        with `board=` from another process): they are due now on the board."""
        try:
            due = await self.board.jobs(state=JobState.UNCLAIMED, include_delayed=False)
        except BoardUnavailable:
            return
        for job in due:
            if job.uuid in self._parked:
                self.adopt(job.uuid)

    async def _claim_one(self, tg: asyncio.TaskGroup, job: Job | str) -> float | None:
        """Claim one job and start it; returns seconds until it is due if it is not yet."""
        job_id = job if isinstance(job, str) else job.uuid
        try:
            claim = await self.board.claim(job, self.name)
        except NotYetDue as exc:
            return exc.due_in
        except (NotClaimable, JobNotFound):
            self._adopted.discard(job_id)  # someone else has it, or it is gone
            return None
        except BoardUnavailable:
            return None
        self._adopted.discard(job_id)
        self._emit("claimed", claim.job, extra={"token": claim.token})
        task = tg.create_task(self._work(claim), name=f"zag-job-{job_id}")
        self._active[job_id] = (claim, task, None)
        return None

    def _drop_lost_claims(self) -> None:
        """The board lost its session: stop every job whose claim is gone."""
        for claim, task, _engine in list(self._active.values()):
            if not self.board.holds(claim):
                self._emit("lost", claim.job, "claim lost with the board session; stopping")
                task.cancel()

    # -- one job -------------------------------------------------------------------

    async def _work(self, claim: Claim) -> None:
        job = claim.job
        try:
            await self._run_job(claim)
        except asyncio.CancelledError:
            if self.board.holds(claim):
                with contextlib.suppress(JobError):
                    await self.board.abandon(claim)
            if not self._stopping:
                return  # cancelled because the claim was lost: nothing more to do
            raise
        except Exception as exc:
            logger.exception("conductor %s: job %s failed unexpectedly", self.name, job.uuid)
            # Counted like a build failure: an error that recurs ends in the trash
            # after build_attempts instead of a claim-fail-give-back loop.
            await self._build_failed(claim, exc)
        finally:
            self._active.pop(job.uuid, None)
            self._wake.set()

    async def _run_job(self, claim: Claim) -> None:
        job = claim.job
        listeners = list(self._engine_listeners(job)) if self._engine_listeners else []
        try:
            engine = await Engine.load(
                job.flow_id,
                backend=self.backend,
                owner=claim.fence,
                # The board's claim is the authority: a frozen predecessor's live
                # lease must not stall the job; the version bump fences it off.
                takeover=True,
                listeners=listeners,
                **self._engine_options,
            )
        except (ConfigurationError, FlowDefinitionError, ImportError, TypeError, NotFound) as exc:
            # (NotFound: the job's flow record is gone, e.g. deleted by hand: counted
            # like a build failure, so the job ends in the trash instead of being
            # claimed and given back forever.)
            await self._build_failed(claim, exc)
            return
        except (StorageError, ConcurrentUpdate) as exc:
            await self._give_back(claim, f"could not load its flow: {exc}")
            return
        self._active[job.uuid] = (claim, self._active[job.uuid][1], engine)
        if self._stopping:
            engine.suspend()
        self._emit("started", job, extra={"flow_id": job.flow_id})
        error: BaseException | None = None
        results: Mapping[str, Any] | None = None
        try:
            results = await engine.run()
        except StorageError as exc:
            await self._give_back(claim, f"storage trouble: {exc}")
            return
        except ZagError as exc:
            error = exc
        except Exception as exc:  # the flow's own failure, re-raised after reverting
            error = exc
        state = engine.state
        if state is FlowState.SUSPENDED:
            if SUSPENDED_KEY in engine.storage.flow.meta:
                # An operator suspended it: it waits for them, not for another conductor.
                await self._park(claim, engine)
            else:
                await self._give_back(claim, "suspended")
            return
        if state is FlowState.WAITING:
            await self._park(claim, engine)
            return
        outcome = job_outcome(job, state, results, error)
        if state in (FlowState.FAILURE, FlowState.UNCOMPENSATED, FlowState.STUCK_PAST_PIVOT):
            await self._finish(claim, "trashed", outcome, f"flow ended {state}: {outcome.error}")
        else:
            await self._finish(claim, "consumed", outcome, None)

    async def _finish(
        self,
        claim: Claim,
        kind: Literal["consumed", "trashed"],
        outcome: JobOutcome,
        reason: str | None,
    ) -> None:
        job = claim.job
        try:
            if kind == "trashed":
                await self.board.trash(claim, reason or outcome.state)
            else:
                next_job = await self.board.next_scheduled(job, after=self.board.estimate_now())
                await self.board.consume(claim, outcome, next_job=next_job)
        except ClaimLost as exc:
            self._emit("lost", job, f"claim lost before the job could be finished: {exc}")
            return
        except (JobError, StorageError) as exc:
            await self._give_back(claim, f"could not finish: {exc}")
            return
        self._emit(kind, job, reason, outcome=outcome)

    async def _park(self, claim: Claim, engine: Engine) -> None:
        """Give back the job of a WAITING flow, due at its earliest deadline (on the
        board's clock: the seconds left by the flow database's clock)."""
        job = claim.job
        waits = engine.waiting_for
        try:
            delay = await wake_delay(self.backend, waits)
            await self.board.park(claim, delay=delay)
        except ClaimLost as exc:
            self._emit("lost", job, f"claim lost before the job could be parked: {exc}")
            return
        except (JobError, StorageError) as exc:
            await self._give_back(claim, f"could not park: {exc}")
            return
        until = "a signal" if delay is None else f"a signal or {delay:.3f} s"
        self._emit("parked", job, f"flow waits for {until}")
        self.track_parked(job.uuid, delay)
        try:
            if await signalled(self.backend, job.flow_id, waits):
                await self.wake(job.uuid)
        except (JobError, StorageError) as exc:
            # The sweep wakes it within RECOVER_EVERY seconds.
            logger.warning("conductor %s: could not wake job %s: %s", self.name, job.uuid, exc)

    async def _build_failed(self, claim: Claim, exc: BaseException) -> None:
        job = claim.job
        reason = error_text(exc)
        try:
            count = await self.board.record_build_failure(claim, reason)
        except JobError as board_exc:
            await self._give_back(claim, f"could not record a build failure: {board_exc}")
            return
        if count >= self.build_attempts:
            try:
                await self.board.trash(claim, f"flow could not be built {count} times: {reason}")
            except JobError:
                await self._give_back(claim, "could not trash")
                return
            self._emit("trashed", job, f"flow could not be built ({count} attempts): {reason}")
        else:
            await self._give_back(claim, f"flow could not be built (attempt {count}): {reason}")

    async def _give_back(self, claim: Claim, why: str) -> None:
        try:
            await self.board.abandon(claim)
        except JobError as exc:
            self._emit("lost", claim.job, f"{why}; and the claim could not be released: {exc}")
            return
        self._emit("abandoned", claim.job, why)
