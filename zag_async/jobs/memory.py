"""`memory://`: a job board inside this process (the embedded default).

Claims, delays and schedules behave as on ZooKeeper, with this process's
clock as the board's clock; conductors and posters must share the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Callable, Collection
from typing import TYPE_CHECKING

from ..errors import AlreadyClaimed, ClaimLost, NotYetDue
from .base import PARKED, Claim, FinishedJob, Job, JobBoard, JobOutcome, JobState, Schedule

if TYPE_CHECKING:
    from ..persistence.base import Backend

__all__ = ["MemoryBoard"]


class _Shared:
    """One in-process board's data (shared by every MemoryBoard with the same URL)."""

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.claims: dict[str, Claim] = {}
        self.keys: dict[str, str] = {}
        self.outcomes: dict[str, JobOutcome] = {}
        self.trash: dict[str, tuple[Job, str]] = {}
        self.schedules: dict[str, Schedule] = {}
        self.finished: dict[str, Job] = {}
        #: when each finished job ended (this process's clock), in finishing order
        self.ended: dict[str, float] = {}
        #: each open board's change notifier: a change made through one board wakes all
        self.notifiers: set[Callable[[], None]] = set()
        self.locks: dict[str, asyncio.Lock] = {}
        self.order = itertools.count(1)
        self.tokens = itertools.count(1)


_BOARDS: dict[str, _Shared] = {}


class MemoryBoard(JobBoard):
    def __init__(
        self,
        url: str = "memory://",
        *,
        backend: Backend | None = None,
        persistence: Backend | None = None,
    ) -> None:
        super().__init__(url, backend=backend, persistence=persistence)
        name = url.partition("://")[2].strip("/")
        self._s = _BOARDS.setdefault(name, _Shared()) if name else _Shared()
        self._s.notifiers.add(self._notify)

    async def aclose(self) -> None:
        await super().aclose()
        self._s.notifiers.discard(self._notify)

    def _changed(self) -> None:
        for notify in list(self._s.notifiers):
            notify()

    async def now(self) -> float:
        return time.time()

    def _copy(self, job: Job, state: JobState) -> Job:
        copy = Job.from_dict(job.to_dict(), order=job.order, version=job.version, state=state)
        copy.board = self
        return copy

    async def _post(self, job: Job, delay: float | None) -> Job:
        s = self._s
        key = job.idempotency_key
        if key is not None and key in s.keys:
            found = await self.find_key(key)
            assert found is not None
            return found
        if job.uuid in s.jobs:  # this very job was posted before
            return await self.get(job.uuid)
        job.posted_at = time.time()
        if delay is not None:
            job.due_at = job.posted_at + delay if delay > 0 else 0.0
        job.order = next(s.order)
        s.jobs[job.uuid] = self._copy(job, JobState.UNCLAIMED)
        if key is not None:
            s.keys[key] = job.uuid
        self._changed()
        return self._copy(job, JobState.UNCLAIMED)

    async def find_key(self, key: str) -> Job | None:
        job_id = self._s.keys.get(key)
        if job_id is None:
            return None
        if job_id in self._s.jobs:
            return await self.get(job_id)
        done = self._s.finished.get(job_id)
        return None if done is None else self._copy(done, self._finished_state(job_id))

    def _finished_state(self, job_id: str) -> JobState:
        return JobState.TRASHED if job_id in self._s.trash else JobState.COMPLETE

    async def _save_schedules(self, schedules: dict[str, Schedule], *, replace: bool) -> list[str]:
        s = self._s
        added = [n for n in schedules if n not in s.schedules or s.schedules[n] != schedules[n]]
        removed = [n for n in s.schedules if n not in schedules] if replace else []
        stale = set(removed) | {n for n in added if n in s.schedules}
        for name in removed:
            del s.schedules[name]
        for job_id, job in list(s.jobs.items()):
            if job.schedule in stale and job_id not in s.claims:
                del s.jobs[job_id]
        s.schedules.update(schedules)
        if stale:
            self._changed()
        return added

    async def _load_schedules(self) -> dict[str, Schedule]:
        return dict(self._s.schedules)

    async def jobs(
        self,
        *,
        state: JobState | None = None,
        include_delayed: bool = True,
        limit: int | None = None,
    ) -> list[Job]:
        now = time.time()
        out = []
        for job_id, job in self._s.jobs.items():
            job_state = JobState.CLAIMED if job_id in self._s.claims else JobState.UNCLAIMED
            if state is not None and job_state is not state:
                continue
            if not include_delayed and job.due_at > now:
                continue
            out.append(self._copy(job, job_state))
        ordered = self.claim_order(out)
        return ordered if limit is None else ordered[:limit]

    async def get(self, job_id: str) -> Job:
        job = self._s.jobs.get(job_id)
        if job is None:
            raise self._missing(job_id)
        state = JobState.CLAIMED if job_id in self._s.claims else JobState.UNCLAIMED
        return self._copy(job, state)

    async def claim(self, job: Job | str, owner: str) -> Claim:
        job_id = self._id(job)
        s = self._s
        stored = s.jobs.get(job_id)
        if stored is None:
            raise self._missing(job_id)
        if job_id in s.claims:
            raise AlreadyClaimed(f"job {job_id!r} is claimed by {s.claims[job_id].owner!r}")
        now = time.time()
        if stored.due_at > now:
            raise NotYetDue(job_id, stored.due_at - now)
        claim = Claim(self._copy(stored, JobState.CLAIMED), owner, next(s.tokens))
        s.claims[job_id] = claim
        self._changed()
        return claim

    def _check(self, claim: Claim) -> None:
        held = self._s.claims.get(claim.job.uuid)
        if held is None or held.token != claim.token:
            raise ClaimLost(f"job {claim.job.uuid!r}: claim {claim.fence!r} is no longer held")

    def holds(self, claim: Claim) -> bool:
        held = self._s.claims.get(claim.job.uuid)
        return held is not None and held.token == claim.token

    async def abandon(self, claim: Claim) -> None:
        self._check(claim)
        del self._s.claims[claim.job.uuid]
        self._changed()

    async def park(self, claim: Claim, *, delay: float | None) -> None:
        self._check(claim)
        job_id = claim.job.uuid
        self._s.jobs[job_id].due_at = PARKED if delay is None else time.time() + max(delay, 0.0)
        del self._s.claims[job_id]
        self._changed()

    async def wake(self, job_id: str) -> bool:
        job = self._s.jobs.get(job_id)
        if job is None or job_id in self._s.claims:
            return False
        if job.due_at > time.time():
            job.due_at = 0.0
            self._changed()
        return True

    async def next_due(self) -> float | None:
        now = time.time()
        s = self._s
        due = [j.due_at for i, j in s.jobs.items() if i not in s.claims and j.due_at > now]
        return min(due) - now if due else None

    async def consume(
        self, claim: Claim, outcome: JobOutcome, *, next_job: Job | None = None
    ) -> None:
        self._check(claim)
        s = self._s
        job_id = claim.job.uuid
        del s.claims[job_id]
        s.finished[job_id] = s.jobs.pop(job_id)
        s.outcomes[job_id] = outcome
        s.ended[job_id] = time.time()
        if next_job is not None:
            await self._post(next_job, None)
        self._changed()

    async def trash(self, claim: Claim, reason: str) -> None:
        self._check(claim)
        s = self._s
        job_id = claim.job.uuid
        del s.claims[job_id]
        job = s.jobs.pop(job_id)
        s.finished[job_id] = job
        s.trash[job_id] = (job, reason)
        s.outcomes[job_id] = JobOutcome.trashed(job, reason)
        s.ended[job_id] = time.time()
        self._changed()

    async def record_build_failure(self, claim: Claim, error: str) -> int:
        self._check(claim)
        job = self._s.jobs[claim.job.uuid]
        job.build_failures += 1
        job.version += 1
        return job.build_failures

    async def find_owner(self, job: Job | str) -> str | None:
        claim = self._s.claims.get(self._id(job))
        return None if claim is None else claim.owner

    async def outcome(self, job_id: str) -> JobOutcome | None:
        return self._s.outcomes.get(job_id)

    async def find_finished(self, job_id: str) -> FinishedJob | None:
        s = self._s
        if job_id not in s.ended:
            return None
        job = self._copy(s.finished[job_id], self._finished_state(job_id))
        return FinishedJob(job, s.outcomes[job_id], s.ended[job_id])

    async def finished(
        self, *, limit: int = 100, states: Collection[str] | None = None
    ) -> list[FinishedJob]:
        s = self._s
        out: list[FinishedJob] = []
        for job_id in reversed(s.ended):
            if len(out) >= limit:
                break
            outcome = s.outcomes[job_id]
            if states is None or outcome.state in states:
                found = await self.find_finished(job_id)
                assert found is not None
                out.append(found)
        return out

    async def _wait_outcome(self, job_id: str) -> JobOutcome:
        changed = asyncio.Event()
        unsubscribe = self.subscribe(changed.set)
        try:
            while True:
                changed.clear()
                found = self._s.outcomes.get(job_id)
                if found is not None:
                    return found
                if job_id not in self._s.jobs:
                    raise self._missing(job_id)
                await changed.wait()
        finally:
            unsubscribe()

    @contextlib.asynccontextmanager
    async def _lock(self, name: str) -> AsyncIterator[None]:
        lock = self._s.locks.setdefault(name, asyncio.Lock())
        async with lock:
            yield

    def lock(self, name: str) -> contextlib.AbstractAsyncContextManager[None]:
        return self._lock(name)
