"""`zookeeper://host:port[,host:port]/path`: a job board in ZooKeeper.

This module is the board itself, what the `JobBoard` ABC asks of a backend:
posting and reading jobs, outcomes, and the schedules' atomic replacement. It
is built from rooms of their own: the node layout and encoding (`zknodes`),
the watch-fed job cache (`zkcache`), the claim protocol (`zkclaims`), lock
queues (`zklock`) and the session that absorbs aiozk's defects (`zksession`).

A claim is an ephemeral node, so it vanishes with its owner's session. Delays
and schedules are measured on ZooKeeper's clock (node creation times), never
on the poster's or the conductor's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from aiozk import exc as zk_exc
from aiozk import protocol
from aiozk.transaction import Transaction

from ..errors import BoardUnavailable, ConfigurationError
from ..persistence.urls import hide_password
from .base import PARKED, JobBoard
from .records import Claim, FinishedJob, Holder, Job, JobOutcome, JobState
from .schedule import Schedule
from .zkcache import JobCache
from .zkclaims import ZkClaims
from .zklock import hold_lock
from .zknodes import (
    DIRS,
    EV,
    ScheduleOps,
    ZkClock,
    dumps,
    failed,
    key_node,
    load_schedules,
    loads,
    multi,
    read_result,
)
from .zksession import ZkSession

if TYPE_CHECKING:
    from ..persistence.base import Backend

__all__ = ["ZooKeeperBoard"]

logger = logging.getLogger("zag_async.jobs")

#: The most result nodes `finished()` reads (which ones, beyond that, is arbitrary).
FINISHED_SCAN = 2000


class ZooKeeperBoard(JobBoard):
    """Jobs, claims, schedules and locks in ZooKeeper.

    Args:
        url: `zookeeper://host:port[,host:port]/path` (path defaults to /zag).
        backend: where posted jobs' flow records are created.
        session_timeout: seconds before a silent owner's claims expire.
        call_timeout: deadline of each ZooKeeper call (then retried, then
            `BoardUnavailable`).
    """

    def __init__(
        self,
        url: str,
        *,
        backend: Backend | None = None,
        persistence: Backend | None = None,
        session_timeout: float = 10.0,
        call_timeout: float = 5.0,
    ) -> None:
        super().__init__(url, backend=backend, persistence=persistence)
        parts = urlsplit(url)
        if not parts.netloc:
            raise ConfigurationError(f"zookeeper URL needs host:port, got {url!r}")
        if "@" in parts.netloc:
            raise ConfigurationError(
                f"zookeeper URLs take no user or password, got {hide_password(url)!r}"
            )
        if parts.query or parts.fragment:
            raise ConfigurationError(f"zookeeper URLs take no query or fragment, got {url!r}")
        self.servers = parts.netloc
        self.root = parts.path.rstrip("/") or "/zag"
        self.zk = ZkSession(
            self.servers,
            self.root,
            session_timeout=session_timeout,
            call_timeout=call_timeout,
            url=url,
        )
        self._clock = ZkClock(self.zk)
        self._view = JobCache(
            self.zk,
            board=self,
            url=url,
            notify=self._notify,
            claims_listed=self._clean_lost_claims,
        )
        self._claims = ZkClaims(
            self.zk, view=self._view, clock=self._clock, url=url, missing=self._missing
        )
        self._opened = False
        #: result nodes read by `finished()`: job id -> (creation zxid, the finished job)
        self._results: dict[str, tuple[int, FinishedJob]] = {}

    # -- lifecycle ---------------------------------------------------------------

    async def open(self) -> None:
        if self._opened:
            return
        self._opened = True
        await self.zk.start()
        await self._view.start()
        self.zk.on_lost.append(self._session_lost)
        for name in DIRS:
            await self.zk.call(self.zk.c.ensure_path, "/" + name)

    async def aclose(self) -> None:
        if self._closed:
            return
        await super().aclose()
        try:
            await self._view.aclose()
        finally:
            await self.zk.aclose()

    def _session_lost(self) -> None:
        self._claims.session_lost()
        self._claims_lost()
        self._notify()

    def holds(self, claim: Claim) -> bool:
        return self._claims.holds(claim)

    # -- watching ----------------------------------------------------------------

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        self._view.watch()
        return super().subscribe(callback)

    async def refresh(self) -> None:
        """Re-read the board's listings now (`jobs()` answers from a watch-fed cache,
        which may lag another board's last change by one watch event)."""
        await self._view.refresh()

    async def _fresh_view(self) -> None:
        """Keep the cache watch-fed from now on; re-read it while the watches are not armed."""
        self._view.watch()
        if not self._view.current:
            await self._view.refresh()

    # -- clock -------------------------------------------------------------------

    async def now(self) -> float:
        """ZooKeeper's clock: the modification time of a node we touch now."""
        return await self._clock.now()

    def estimate_now(self) -> float:
        """ZooKeeper's clock estimated without a round trip (from the last one seen)."""
        return self._clock.estimate()

    # -- jobs --------------------------------------------------------------------

    async def _post(self, job: Job, delay: float | None) -> Job:
        data = job.to_dict()
        if delay is not None:
            data["delay"] = delay
            data.pop("due_at", None)
        key = job.idempotency_key
        if key is None:
            # One round trip: create with stat (the post time is the node's ctime).
            request = protocol.Create2Request(
                path=self.zk.c.normalize_path(f"/jobs/{job.uuid}"),
                data=dumps(data),
                acl=self.zk.c.default_acl,
            )
            request.set_flags(False, False, False)
            try:
                response = await self.zk.call(self.zk.c.send, request)
            except zk_exc.NodeExists:  # our own earlier attempt landed
                found = await self._view.read(job.uuid)
                if found is None:
                    raise self._missing(job.uuid) from None
                return self._view.with_state(found)
            stored = self._view.decode(dumps(data), response.stat)
            self._view.jobs.setdefault(stored.uuid, stored)
            return self._view.with_state(stored)

        def build(tx: Transaction) -> None:
            tx.create(f"/jobs/{job.uuid}", dumps(data))
            tx.create("/" + key_node(key), job.uuid.encode())

        if failed(await multi(self.zk, build)):
            found = await self.find_key(key)
            if found is not None:
                return found
            found_job = await self._view.read(job.uuid)
            if found_job is not None:  # our own earlier attempt landed
                return self._view.with_state(found_job)
            raise BoardUnavailable(f"board {self.url}: could not post job {job.name!r}")
        stored_job = await self._view.read(job.uuid)
        if stored_job is None:
            raise self._missing(job.uuid)
        self._view.jobs.setdefault(stored_job.uuid, stored_job)
        return self._view.with_state(stored_job)

    async def find_key(self, key: str) -> Job | None:
        try:
            raw, _ = await self.zk.call(self.zk.c.get, "/" + key_node(key))
        except zk_exc.NoNode:
            return None
        job_id = raw.decode()
        job = await self._view.read(job_id)
        if job is not None:
            claimed = await self.zk.call(self.zk.c.exists, f"/claims/{job_id}")
            job.state = JobState.CLAIMED if claimed else JobState.UNCLAIMED
            return job
        result = await read_result(self.zk, job_id)
        if result is None or "job" not in result:
            return None
        done = Job.from_dict(result["job"])
        done.board = self
        done.state = (
            JobState.TRASHED if result["outcome"]["state"] == "TRASHED" else JobState.COMPLETE
        )
        return done

    async def jobs(
        self,
        *,
        state: JobState | None = None,
        include_delayed: bool = True,
        limit: int | None = None,
    ) -> list[Job]:
        await self._fresh_view()
        now = self.estimate_now()
        claimed = self._view.claimed
        picked = []
        for job in self._view.jobs.values():
            if state is not None and (job.uuid in claimed) != (state is JobState.CLAIMED):
                continue
            if not include_delayed and job.due_at > now:
                continue
            picked.append(job)
        ordered = self.claim_order(picked)
        if limit is not None:
            ordered = ordered[:limit]
        return [self._view.with_state(job) for job in ordered]

    async def get(self, job_id: str) -> Job:
        job = await self._view.read(job_id)
        if job is None:
            raise self._missing(job_id)
        claimed = await self.zk.call(self.zk.c.exists, f"/claims/{job_id}")
        job.state = JobState.CLAIMED if claimed else JobState.UNCLAIMED
        return job

    # -- claims (the protocol is in zkclaims) --------------------------------------

    async def claim(self, job: Job | str, owner: str) -> Claim:
        return await self._claims.claim(self._id(job), owner)

    async def _clean_lost_claims(self) -> None:
        """After a reconnect: drop claims we gave up on while disconnected."""
        await self._claims.clean_lost()

    async def abandon(self, claim: Claim) -> None:
        await self._claims.abandon(claim)

    async def park(self, claim: Claim, *, delay: float | None) -> None:
        due = PARKED if delay is None else self.estimate_now() + max(delay, 0.0)
        await self._claims.park(claim, due)

    async def wake(self, job_id: str) -> bool:
        woken = await self._claims.wake(job_id, self.estimate_now())
        if woken:
            self._notify()
        return woken

    async def next_due(self) -> float | None:
        await self._fresh_view()
        now = self.estimate_now()
        claimed = self._view.claimed
        due = [
            j.due_at for j in self._view.jobs.values() if j.uuid not in claimed and j.due_at > now
        ]
        return min(due) - now if due else None

    async def consume(
        self, claim: Claim, outcome: JobOutcome, *, next_job: Job | None = None
    ) -> None:
        await self._claims.finish(claim, outcome, None, next_job)

    async def trash(self, claim: Claim, reason: str) -> None:
        await self._claims.finish(claim, JobOutcome.trashed(claim.job, reason), reason, None)

    async def record_build_failure(self, claim: Claim, error: str) -> int:
        return await self._claims.record_build_failure(claim, error)

    async def find_owner(self, job: Job | str) -> str | None:
        try:
            raw, _ = await self.zk.call(self.zk.c.get, f"/claims/{self._id(job)}")
        except zk_exc.NoNode:
            return None
        owner = (loads(raw) or {}).get("owner")
        return None if owner is None else str(owner)

    async def holders(self, of: Sequence[Job | str]) -> dict[str, Holder]:
        ids = [self._id(job) for job in of]
        found = await asyncio.gather(*(self._holder(job_id) for job_id in ids))
        return {i: h for i, h in zip(ids, found, strict=True) if h is not None}

    async def _holder(self, job_id: str) -> Holder | None:
        try:
            raw, stat = await self.zk.call(self.zk.c.get, f"/claims/{job_id}")
        except zk_exc.NoNode:
            return None
        owner = (loads(raw) or {}).get("owner")
        if owner is None:
            return None
        return Holder(str(owner), session=f"0x{stat.ephemeral_owner:x}")

    # -- outcomes ----------------------------------------------------------------

    async def outcome(self, job_id: str) -> JobOutcome | None:
        found = await read_result(self.zk, job_id)
        return None if found is None else JobOutcome.from_dict(found["outcome"])

    async def finished(
        self, *, limit: int = 100, states: Collection[str] | None = None
    ) -> list[FinishedJob]:
        # Result nodes have no order but their creation time: read them (at most
        # FINISHED_SCAN, in batches) and sort. A result node never changes once
        # written, so each is read once and kept while it is listed.
        names = (await self.zk.call(self.zk.c.get_children, "/results"))[:FINISHED_SCAN]
        known = self._results
        fresh = [n for n in names if n not in known]
        for start in range(0, len(fresh), 50):
            batch = fresh[start : start + 50]
            for name, item in zip(
                batch, await asyncio.gather(*(self._finished_one(n) for n in batch)), strict=True
            ):
                if item is not None:
                    known[name] = item
        self._results = {n: known[n] for n in names if n in known}
        found = [
            item
            for item in self._results.values()
            if states is None or item[1].outcome.state in states
        ]
        # creation order (zxid) is finishing order, also within one millisecond
        found.sort(key=lambda pair: pair[0], reverse=True)
        return [self._copy_finished(item) for _, item in found[: max(limit, 0)]]

    async def find_finished(self, job_id: str) -> FinishedJob | None:
        found = await self._finished_one(job_id)
        return None if found is None else found[1]

    def _copy_finished(self, item: FinishedJob) -> FinishedJob:
        """A copy of a kept record (a `Job` is mutable; the cache must stay as read)."""
        job = Job.from_dict(item.job.to_dict(), state=item.job.state)
        job.board = self
        return FinishedJob(job, item.outcome, item.finished_at)

    async def _finished_one(self, job_id: str) -> tuple[int, FinishedJob] | None:
        try:
            raw, stat = await self.zk.call(self.zk.c.get, f"/results/{job_id}")
        except zk_exc.NoNode:
            return None
        data = loads(raw)
        if not isinstance(data, dict) or "job" not in data or "outcome" not in data:
            return None
        outcome = JobOutcome.from_dict(data["outcome"])
        job = Job.from_dict(data["job"])
        job.board = self
        job.state = JobState.TRASHED if outcome.state == "TRASHED" else JobState.COMPLETE
        return stat.created_zxid, FinishedJob(job, outcome, stat.created / 1000.0)

    async def _wait_outcome(self, job_id: str) -> JobOutcome:
        created = asyncio.Event()
        path = f"/results/{job_id}"
        remove = self.zk.watch([EV.CREATED], path, lambda _p: created.set())
        try:
            while True:
                generation = self.zk.generation
                created.clear()
                try:
                    if await self.zk.call(self.zk.c.exists, path, watch=True):
                        found = await self.outcome(job_id)
                        if found is not None:
                            return found
                except BoardUnavailable as exc:
                    logger.warning("board %s: waiting for job %s: %s", self.url, job_id, exc)
                await self.zk.event_or_reconnect(created, generation)
        finally:
            remove()

    # -- schedules ---------------------------------------------------------------

    async def _load_schedules(self) -> dict[str, Schedule]:
        return await load_schedules(self.zk)

    async def _save_schedules(self, schedules: dict[str, Schedule], *, replace: bool) -> list[str]:
        for _ in range(10):
            current = await self._load_schedules()
            added = [n for n in schedules if current.get(n) != schedules[n]]
            removed = [n for n in current if n not in schedules] if replace else []
            stale = set(removed) | {n for n in added if n in current}
            pending = []
            if stale:
                await self._view.refresh()
                pending = [
                    j.uuid
                    for j in self._view.jobs.values()
                    if j.schedule in stale and j.uuid not in self._view.claimed
                ]

            if not (added or removed):
                return []
            ops = ScheduleOps(removed, pending, {n: schedules[n] for n in added}, set(current))
            if not failed(await multi(self.zk, ops.build)):
                return added
            # Someone changed schedules or jobs at the same time: look again.
        raise BoardUnavailable(f"board {self.url}: schedules kept changing under us")

    # -- locks -------------------------------------------------------------------

    def lock(self, name: str) -> contextlib.AbstractAsyncContextManager[None]:
        if not name or "/" in name:
            raise ConfigurationError(f"lock names are one path segment, got {name!r}")
        return hold_lock(self.zk, name)
