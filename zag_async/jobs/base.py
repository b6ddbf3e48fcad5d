"""Job boards: hand whole flows between processes, one owner at a time.

A job names a flow factory and the flow record made for it when it was
posted. A conductor claims a job, rebuilds the flow from the record, runs it,
and consumes the job. A claim carries a fencing token (increasing across the
board) that the conductor hands to the flow's storage, so an owner that lost
its claim but still runs can no longer write.

Every time on a board is the board's own clock (ZooKeeper's, for
`zookeeper://`): a delayed job is due when the board says so, whatever the
poster's or the conductor's clock think.

This module is the board seam: the ABC that backends implement and the code
they all share (posting, idempotency, schedules, change notification). The
records it trades in are in `records.py`, cron arithmetic in `schedule.py`;
both are re-exported here for the import paths that predate them.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import time
import warnings
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self
from uuid import NAMESPACE_URL, uuid4, uuid5

from ..errors import BoardUnavailable, ConcurrentUpdate, ConfigurationError, JobNotFound
from ..factory import FactoryRef
from ..models import FlowDetail
from ..waiting import wake_job_id
from .records import Claim, FinishedJob, Holder, Job, JobOutcome, JobState
from .schedule import Schedule, check_cron, next_fire

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

    from ..persistence.base import Backend

__all__ = [
    "PARKED",
    "Claim",
    "FinishedJob",
    "Holder",
    "Job",
    "JobBoard",
    "JobOutcome",
    "JobState",
    "Schedule",
    "next_fire",
    "wake_job_id",
]

logger = logging.getLogger("zag_async.jobs")


ChangeCallback = Callable[[], None]


def pick_backend(
    owner: str, backend: Backend | None, persistence: Backend | None, stacklevel: int = 3
) -> Backend:
    """The flow-state backend passed as `backend=` or as its deprecated old name
    `persistence=` (warned about, so one setting has one name across the API)."""
    if persistence is not None:
        if backend is not None:
            raise ConfigurationError(f"{owner}: pass backend= only (persistence= is its old name)")
        warnings.warn(
            f"{owner}(persistence=...) is deprecated; pass backend=",
            DeprecationWarning,
            stacklevel,  # the caller's line, so the default filters show it
        )
        return persistence
    if backend is None:
        raise ConfigurationError(f"{owner} needs backend=, the flow-state backend of its flows")
    return backend


#: The due time (board clock) of a job parked with no deadline: only `wake` makes it due.
PARKED = 32503680000.0  # 3000-01-01 UTC


class JobBoard(abc.ABC):
    """Where jobs are posted and claimed. Use as `async with`.

    Subclasses store jobs (in memory, in ZooKeeper); this base holds what
    every board shares: creating the flow record at post, idempotency,
    schedules, waiting for outcomes and change notification.
    """

    url: str

    #: True when claims outlive their holder until a lease runs out (SQL boards), so
    #: `release_owner` can give a dead holder's claims back early.
    releases_owners = False

    def __init__(
        self, url: str, *, backend: Backend | None = None, persistence: Backend | None = None
    ) -> None:
        self.url = url
        # stacklevel 4: past JobBoard.__init__ and the board's own __init__
        self.backend = pick_backend(type(self).__name__, backend, persistence, 4)
        self._subscribers: set[ChangeCallback] = set()
        self._lost_subscribers: set[ChangeCallback] = set()
        self._closed = False

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def open(self) -> None:  # noqa: B027 (optional hook)
        """Connect to the board's server."""

    async def aclose(self) -> None:
        self._closed = True

    @property
    def persistence(self) -> Backend:
        """Deprecated name of `backend`."""
        warnings.warn("JobBoard.persistence is deprecated; use .backend", DeprecationWarning, 2)
        return self.backend

    @property
    def closed(self) -> bool:
        """True once `aclose()` was called."""
        return self._closed

    # -- change notification -----------------------------------------------------

    def subscribe(self, callback: ChangeCallback) -> Callable[[], None]:
        """Call `callback()` whenever jobs or claims change; returns an unsubscribe."""
        self._subscribers.add(callback)
        return lambda: self._subscribers.discard(callback)

    def _notify(self) -> None:
        for callback in list(self._subscribers):
            callback()

    def on_claims_lost(self, callback: ChangeCallback) -> Callable[[], None]:
        """Call `callback()` when claims taken through this board may have been lost
        (its session expired); check each with `holds(claim)`. Returns an unsubscribe."""
        self._lost_subscribers.add(callback)
        return lambda: self._lost_subscribers.discard(callback)

    def _claims_lost(self) -> None:
        for callback in list(self._lost_subscribers):
            callback()

    @abc.abstractmethod
    def holds(self, claim: Claim) -> bool:
        """True while this board still holds `claim` (as far as it knows)."""

    async def watch(self) -> AsyncIterator[Job]:
        """Yield each unclaimed job once: those already there, then new ones as posted.

        Driven by the board's own notifications (ZooKeeper watches), not polling.
        It rides out board outages (BoardUnavailable is logged and the listing
        retried each second) until cancelled, as a conductor does.
        """
        seen: set[str] = set()
        changed = asyncio.Event()
        unsubscribe = self.subscribe(changed.set)
        try:
            while True:
                changed.clear()
                try:
                    jobs = await self.jobs(state=JobState.UNCLAIMED)
                except BoardUnavailable as exc:
                    logger.warning("watching %s: board unavailable, retrying: %s", self, exc)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(1.0):
                            await changed.wait()
                    continue
                for job in jobs:
                    if job.uuid not in seen:
                        seen.add(job.uuid)
                        yield job
                await changed.wait()
        finally:
            unsubscribe()

    # -- posting -----------------------------------------------------------------

    async def post(
        self,
        name: str,
        factory: Callable[..., Any] | str,
        *args: Any,
        kwargs: Mapping[str, Any] | None = None,
        store: Mapping[str, Any] | None = None,
        priority: int = 0,
        delay: float = 0.0,
        idempotency_key: str | None = None,
    ) -> Job:
        """Post a job that runs `factory(*args, **kwargs)` with `store`.

        The flow record is created now (so the poster knows its id). `delay`
        seconds are counted on the board's clock. Posting again with the same
        `idempotency_key` returns the job already posted.
        """
        return await self.post_ref(
            name,
            FactoryRef.of(factory, args, kwargs),
            store=store,
            priority=priority,
            delay=delay,
            idempotency_key=idempotency_key,
        )

    async def post_ref(
        self,
        name: str,
        ref: FactoryRef,
        *,
        store: Mapping[str, Any] | None = None,
        priority: int = 0,
        delay: float = 0.0,
        idempotency_key: str | None = None,
    ) -> Job:
        """`post` for a factory already referenced (say one read back from a flow
        record's meta, to run a failed job's flow again as a new job)."""
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"a job needs a non-empty string name, got {name!r}")
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise ConfigurationError(f"job {name!r}: priority must be an int, got {priority!r}")
        if not isinstance(delay, (int, float)) or delay < 0:
            raise ConfigurationError(f"job {name!r}: delay must be >= 0 seconds, got {delay!r}")
        if not isinstance(ref, FactoryRef):
            raise ConfigurationError(f"job {name!r}: ref must be a FactoryRef, got {ref!r}")
        if idempotency_key is not None:
            existing = await self.find_key(idempotency_key)
            if existing is not None:
                return existing
            # Same key -> same ids, so a retried post cannot make a second flow record.
            job_id = str(uuid5(NAMESPACE_URL, f"zag-job:{idempotency_key}"))
        else:
            job_id = str(uuid4())
        flow_id = str(uuid5(NAMESPACE_URL, f"zag-flow:{job_id}"))
        await self._create_flow_record(flow_id, name, ref, store, job_id)
        job = Job(
            uuid=job_id,
            name=name,
            flow_id=flow_id,
            factory=ref,
            priority=priority,
            idempotency_key=idempotency_key,
        )
        return await self._post(job, delay)

    async def post_scheduled(
        self,
        cron: str,
        name: str,
        factory: Callable[..., Any] | str,
        *args: Any,
        kwargs: Mapping[str, Any] | None = None,
        store: Mapping[str, Any] | None = None,
        priority: int = 0,
    ) -> Job:
        """Post `name` to run at each time `cron` fires.

        Each run is a fresh flow with the same `store`; when a run completes
        the conductor posts the next one (never two, never none).
        """
        schedule = Schedule(
            name, cron, FactoryRef.of(factory, args, kwargs), dict(store or {}), priority
        )
        check_cron(cron)
        await self._save_schedules({name: schedule}, replace=False)
        pending = await self._pending_run(name)
        if pending is not None:  # declared before (and unchanged): keep its pending run
            return pending
        return await self._post_next(schedule, after=await self.now())

    async def reset_schedule(self, schedules: Mapping[str, Schedule]) -> None:
        """Replace the whole set of schedules with `schedules` in one step.

        New schedules get their first job; removed ones lose their pending
        (unclaimed) job; unchanged ones keep theirs.
        """
        for key, schedule in schedules.items():
            if key != schedule.name:
                raise ConfigurationError(f"schedule {schedule.name!r} is filed under {key!r}")
            check_cron(schedule.cron)
        added = await self._save_schedules(dict(schedules), replace=True)
        now = await self.now()
        for name in added:
            if await self._pending_run(name) is None:
                await self._post_next(schedules[name], after=now)

    async def _pending_run(self, schedule: str, *, besides: str | None = None) -> Job | None:
        """A job of `schedule` still on the board (claimed or not), if any."""
        for job in await self.jobs():
            if job.schedule == schedule and job.uuid != besides:
                return job
        return None

    async def schedules(self) -> dict[str, Schedule]:
        """The schedules on this board, by name."""
        return await self._load_schedules()

    async def _post_next(self, schedule: Schedule, *, after: float) -> Job:
        """Post the run of `schedule` that follows `after` (idempotent per fire time)."""
        due = next_fire(schedule.cron, after)
        key = f"schedule:{schedule.name}:{due:.3f}"
        existing = await self.find_key(key)
        if existing is not None:
            return existing
        job_id = str(uuid5(NAMESPACE_URL, f"zag-job:{key}"))
        flow_id = str(uuid5(NAMESPACE_URL, f"zag-flow:{job_id}"))
        await self._create_flow_record(
            flow_id, schedule.name, schedule.factory, schedule.store, job_id
        )
        job = Job(
            uuid=job_id,
            name=schedule.name,
            flow_id=flow_id,
            factory=schedule.factory,
            priority=schedule.priority,
            idempotency_key=key,
            schedule=schedule.name,
            due_at=due,
        )
        return await self._post(job, None)

    async def next_scheduled(self, job: Job, *, after: float) -> Job | None:
        """The job that follows `job` on its schedule (None if it has none any more)."""
        if job.schedule is None:
            return None
        schedule = (await self._load_schedules()).get(job.schedule)
        if schedule is None or await self._pending_run(job.schedule, besides=job.uuid) is not None:
            return None  # schedule removed, or a run is already pending (e.g. re-declared)
        due = next_fire(schedule.cron, max(after, job.due_at))
        key = f"schedule:{schedule.name}:{due:.3f}"
        job_id = str(uuid5(NAMESPACE_URL, f"zag-job:{key}"))
        flow_id = str(uuid5(NAMESPACE_URL, f"zag-flow:{job_id}"))
        await self._create_flow_record(
            flow_id, schedule.name, schedule.factory, schedule.store, job_id
        )
        return Job(
            uuid=job_id,
            name=schedule.name,
            flow_id=flow_id,
            factory=schedule.factory,
            priority=schedule.priority,
            idempotency_key=key,
            schedule=schedule.name,
            due_at=due,
        )

    async def _create_flow_record(
        self,
        flow_id: str,
        name: str,
        ref: FactoryRef,
        store: Mapping[str, Any] | None,
        job_id: str,
    ) -> None:
        detail = FlowDetail(
            name=name,
            uuid=flow_id,
            store=dict(store or {}),
            meta={"factory": ref.to_dict(), "job": job_id},
        )
        # ConcurrentUpdate: an earlier attempt of this same post made it (ids are derived).
        with contextlib.suppress(ConcurrentUpdate):
            await self.backend.save(detail, [])

    # -- what subclasses implement -----------------------------------------------

    @abc.abstractmethod
    async def now(self) -> float:
        """The board's clock, in epoch seconds."""

    def estimate_now(self) -> float:
        """The board's clock without a round trip (boards with a remote clock refine it)."""
        return time.time()

    @abc.abstractmethod
    async def _post(self, job: Job, delay: float | None) -> Job:
        """Store a new job (with its idempotency key, if any) and return it as stored.

        If the key is already taken (a concurrent post), return that job instead.

        With `delay` (seconds on the board's clock) the job's due time is set
        from the board's clock at the moment of storing; with None, `job.due_at`
        is kept as given.
        """

    @abc.abstractmethod
    async def find_key(self, key: str) -> Job | None:
        """The job posted under an idempotency key, if any (complete jobs included)."""

    @abc.abstractmethod
    async def _save_schedules(self, schedules: dict[str, Schedule], *, replace: bool) -> list[str]:
        """Store schedules (all of them, with replace); returns the names new or changed.

        Unclaimed pending runs of removed and of changed schedules are deleted
        in the same step (a changed schedule gets a fresh first run).
        """

    @abc.abstractmethod
    async def _load_schedules(self) -> dict[str, Schedule]: ...

    @abc.abstractmethod
    async def jobs(
        self,
        *,
        state: JobState | None = None,
        include_delayed: bool = True,
        limit: int | None = None,
    ) -> list[Job]:
        """Jobs on the board in claim order (priority, then posting order); at most `limit`."""

    @abc.abstractmethod
    async def get(self, job_id: str) -> Job: ...

    @abc.abstractmethod
    async def claim(self, job: Job | str, owner: str) -> Claim:
        """Claim a job for `owner`; raises AlreadyClaimed, NotYetDue or JobNotFound."""

    @abc.abstractmethod
    async def abandon(self, claim: Claim) -> None:
        """Give the job back so another owner can claim it."""

    @abc.abstractmethod
    async def park(self, claim: Claim, *, delay: float | None) -> None:
        """Give the job back due in `delay` seconds of the board's clock, or (None)
        never until `wake` (its flow waits for a signal or a deadline)."""

    @abc.abstractmethod
    async def wake(self, job_id: str) -> bool:
        """Make a parked (or delayed) unclaimed job due now; False when there is no
        such job or it is claimed (its holder looks for signals before parking)."""

    @abc.abstractmethod
    async def next_due(self) -> float | None:
        """Seconds until the soonest delayed unclaimed job is due (None: none is)."""

    async def post_waiting(
        self, flow_id: str, name: str, factory: FactoryRef, delay: float | None
    ) -> Job:
        """Post the job that resumes a stored WAITING flow that was not a job
        (a service's awaited flow), parked like `park` parks; its id is
        `wake_job_id(flow_id)`, so posting twice keeps one job."""
        job = Job(uuid=wake_job_id(flow_id), name=name, flow_id=flow_id, factory=factory)
        if delay is None:
            job.due_at = PARKED
        return await self._post(job, None if delay is None else max(delay, 0.0))

    @abc.abstractmethod
    async def consume(
        self, claim: Claim, outcome: JobOutcome, *, next_job: Job | None = None
    ) -> None:
        """Remove the finished job, record its outcome and, for schedules, post the next run."""

    @abc.abstractmethod
    async def trash(self, claim: Claim, reason: str) -> None:
        """Move a job that cannot run to the trash, recording why."""

    @abc.abstractmethod
    async def record_build_failure(self, claim: Claim, error: str) -> int:
        """Count a failed attempt to build the job's flow; returns the count so far."""

    @abc.abstractmethod
    async def find_owner(self, job: Job | str) -> str | None: ...

    async def claim_owners(self) -> set[str]:
        """The owners holding live claims now (boards with an index of them answer
        in one query; this default reads each claimed job's owner)."""
        owners = {await self.find_owner(job) for job in await self.jobs(state=JobState.CLAIMED)}
        return {owner for owner in owners if owner is not None}

    async def holders(self, of: Sequence[Job | str]) -> dict[str, Holder]:
        """Who holds each job of `of` that is claimed now, by job id (for operators).

        This default asks `find_owner` for each; SQL boards add the lease's end,
        ZooKeeper boards the session whose ephemeral node is the claim.
        """
        ids = [self._id(job) for job in of]
        owners = await asyncio.gather(*(self.find_owner(job_id) for job_id in ids))
        return {i: Holder(o) for i, o in zip(ids, owners, strict=True) if o is not None}

    async def release_owner(self, owner: str) -> list[str]:
        """Give back every claim `owner` holds (a restarted process taking back its own
        work at once); returns the ids of the jobs released.

        Boards whose claims end with their holder (ZooKeeper sessions, a board in
        memory) have nothing to release: this returns [].
        """
        return []

    @abc.abstractmethod
    async def outcome(self, job_id: str) -> JobOutcome | None:
        """How the job ended, or None while it has not."""

    @abc.abstractmethod
    async def _wait_outcome(self, job_id: str) -> JobOutcome: ...

    @abc.abstractmethod
    async def find_finished(self, job_id: str) -> FinishedJob | None:
        """The job `job_id` as it ended (job, outcome, when), or None while it has not."""

    @abc.abstractmethod
    async def finished(
        self, *, limit: int = 100, states: Collection[str] | None = None
    ) -> list[FinishedJob]:
        """Jobs that ended (consumed or trashed), last finished first; at most `limit`.

        `states` keeps only outcomes in those states ("SUCCESS", "REVERTED",
        "FAILURE", "TRASHED"). For operators (the UI's trash and failures):
        ZooKeeper reads each result node, at most FINISHED_SCAN of them.
        """

    @abc.abstractmethod
    def lock(self, name: str) -> AbstractAsyncContextManager[None]:
        """A lock held across processes: `async with board.lock("volume-42"):`.

        Released on exit; if the board loses its session while the lock is
        held, the body is cancelled and `LockLost` raised.
        """

    # -- shared helpers --------------------------------------------------------------

    async def wait(self, job_id: str) -> JobOutcome:
        """Wait until the job is consumed or trashed; returns its outcome."""
        return await self._wait_outcome(job_id)

    @staticmethod
    def claim_order(jobs: Sequence[Job]) -> list[Job]:
        """Higher priority first, then first posted first."""
        return sorted(jobs, key=lambda j: (-j.priority, j.order))

    @staticmethod
    def _id(job: Job | str) -> str:
        return job if isinstance(job, str) else job.uuid

    def _missing(self, job_id: str) -> JobNotFound:
        return JobNotFound(f"no job {job_id!r} on {self.url} (consumed, trashed or never posted)")
