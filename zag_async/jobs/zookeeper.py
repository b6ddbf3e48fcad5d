"""`zookeeper://host:port[,host:port]/path`: a job board in ZooKeeper.

This module is the board itself: posting, claiming and finishing jobs, and the
schedules' atomic replacement. The rooms it is built from: the node layout and
encoding (`zknodes`), the watch-fed job cache (`zkcache`), lock queues
(`zklock`) and the session that absorbs aiozk's defects (`zksession`).

A claim is an ephemeral node, so it vanishes with its owner's session. Delays
and schedules are measured on ZooKeeper's clock (node creation times), never
on the poster's or the conductor's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aiozk import exc as zk_exc
from aiozk import protocol
from aiozk.transaction import Transaction

from ..errors import AlreadyClaimed, BoardUnavailable, ClaimLost, ConfigurationError, NotYetDue
from .base import JobBoard
from .records import Claim, Job, JobOutcome, JobState
from .schedule import Schedule
from .zkcache import JobCache
from .zklock import hold_lock
from .zknodes import (
    DIRS,
    EV,
    ScheduleOps,
    decode_job,
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


class ZooKeeperBoard(JobBoard):
    """Jobs, claims, schedules and locks in ZooKeeper.

    Args:
        url: `zookeeper://host:port[,host:port]/path` (path defaults to /zag).
        persistence: where posted jobs' flow records are created.
        session_timeout: seconds before a silent owner's claims expire.
        call_timeout: deadline of each ZooKeeper call (then retried, then
            `BoardUnavailable`).
    """

    def __init__(
        self,
        url: str,
        *,
        persistence: Backend,
        session_timeout: float = 10.0,
        call_timeout: float = 5.0,
    ) -> None:
        super().__init__(url, persistence=persistence)
        parts = urlsplit(url)
        if not parts.netloc:
            raise ConfigurationError(f"zookeeper URL needs host:port, got {url!r}")
        self.servers = parts.netloc
        self.root = parts.path.rstrip("/") or "/zag"
        self.zk = ZkSession(
            self.servers, self.root, session_timeout=session_timeout, call_timeout=call_timeout
        )
        self._view = JobCache(
            self.zk,
            url=url,
            read_job=self._read_job,
            notify=self._notify,
            claims_listed=self._clean_lost_claims,
        )
        self._held: dict[str, Claim] = {}  # claims taken through this board object
        self._versions: dict[str, int] = {}  # held job -> the job node's version we wrote
        self._held_lost: list[Claim] = []  # claims to clean up once reconnected
        self._offset = 0.0  # ZooKeeper clock - local clock, from the latest write we saw
        self._opened = False

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
        self._held_lost.extend(self._held.values())
        self._held.clear()
        self._versions.clear()
        self._claims_lost()
        self._notify()

    def holds(self, claim: Claim) -> bool:
        held = self._held.get(claim.job.uuid)
        return held is not None and held.token == claim.token

    # -- watching ----------------------------------------------------------------

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        self._view.watch()
        return super().subscribe(callback)

    async def refresh(self) -> None:
        """Re-read the board's listings now (`jobs()` answers from a watch-fed cache,
        which may lag another board's last change by one watch event)."""
        await self._view.refresh()

    async def _read_job(self, job_id: str) -> Job | None:
        try:
            raw, stat = await self.zk.call(self.zk.c.get, f"/jobs/{job_id}")
        except zk_exc.NoNode:
            return None
        return self._job_from(raw, stat)

    def _job_from(self, raw: bytes, stat: Any) -> Job:
        job = decode_job(raw, stat)
        job.board = self
        return job

    def _with_state(self, job: Job) -> Job:
        copy = Job.from_dict(job.to_dict(), order=job.order, version=job.version)
        copy.posted_at, copy.due_at = job.posted_at, job.due_at
        copy.board = self
        copy.state = JobState.CLAIMED if job.uuid in self._view.claimed else JobState.UNCLAIMED
        return copy

    # -- clock -------------------------------------------------------------------

    async def now(self) -> float:
        """ZooKeeper's clock: the modification time of a node we touch now."""
        try:
            stat = await self.zk.call(self.zk.c.set, "/clock", b"", -1)
        except zk_exc.NoNode:
            with contextlib.suppress(zk_exc.NodeExists):
                await self.zk.call(self.zk.c.create, "/clock", b"")
            stat = await self.zk.call(self.zk.c.set, "/clock", b"", -1)
        server = float(stat.modified) / 1000.0
        self._offset = server - time.time()
        return server

    def estimate_now(self) -> float:
        """ZooKeeper's clock estimated without a round trip (from the last one seen)."""
        return time.time() + self._offset

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
                found = await self._read_job(job.uuid)
                if found is None:
                    raise self._missing(job.uuid) from None
                return self._with_state(found)
            stored = self._job_from(dumps(data), response.stat)
            self._view.jobs.setdefault(stored.uuid, stored)
            return self._with_state(stored)

        def build(tx: Transaction) -> None:
            tx.create(f"/jobs/{job.uuid}", dumps(data))
            tx.create("/" + key_node(key), job.uuid.encode())

        if failed(await multi(self.zk, build)):
            found = await self.find_key(key)
            if found is not None:
                return found
            found_job = await self._read_job(job.uuid)
            if found_job is not None:  # our own earlier attempt landed
                return self._with_state(found_job)
            raise BoardUnavailable(f"board {self.url}: could not post job {job.name!r}")
        stored_job = await self._read_job(job.uuid)
        if stored_job is None:
            raise self._missing(job.uuid)
        self._view.jobs.setdefault(stored_job.uuid, stored_job)
        return self._with_state(stored_job)

    async def find_key(self, key: str) -> Job | None:
        try:
            raw, _ = await self.zk.call(self.zk.c.get, "/" + key_node(key))
        except zk_exc.NoNode:
            return None
        job_id = raw.decode()
        job = await self._read_job(job_id)
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
        self._view.watch()
        if not self._view.current:
            await self._view.refresh()
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
        return [self._with_state(job) for job in ordered]

    async def get(self, job_id: str) -> Job:
        job = await self._read_job(job_id)
        if job is None:
            raise self._missing(job_id)
        claimed = await self.zk.call(self.zk.c.exists, f"/claims/{job_id}")
        job.state = JobState.CLAIMED if claimed else JobState.UNCLAIMED
        return job

    # -- claims ------------------------------------------------------------------
    #
    # A claim is one multi: create the ephemeral claim node and rewrite the job
    # node at the version we know. The job node's new modification zxid is the
    # fencing token (it only grows), its modification time is ZooKeeper's clock
    # at the claim, and every later step of the claim (consume, trash, abandon,
    # counting a failed build) checks the job node's version, so an owner whose
    # claim was lost and retaken cannot touch the job any more.

    async def claim(self, job: Job | str, owner: str) -> Claim:
        job_id = self._id(job)
        known = self._view.jobs.get(job_id)
        if known is None:
            known = await self._read_job(job_id)
            if known is None:
                raise self._missing(job_id)
        for _ in range(3):
            marker = uuid.uuid4().hex
            data = known.to_dict()
            if known.due_at and "delay" not in data:
                data["due_at"] = known.due_at
            data["claim"] = {"owner": owner, "marker": marker}
            payload, version = dumps(data), known.version

            holder = dumps({"owner": owner, "marker": marker})

            def build(
                tx: Transaction,
                payload: bytes = payload,
                version: int = version,
                holder: bytes = holder,
            ) -> None:
                tx.create(f"/claims/{job_id}", holder, ephemeral=True)
                tx.set_data(f"/jobs/{job_id}", payload, version)

            responses = await multi(self.zk, build)
            if not failed(responses):
                stat = responses[1].stat
                return await self._claimed_now(known, owner, marker, stat)
            first, second = responses[0], responses[1]
            if isinstance(first, zk_exc.NodeExists):
                if await self._own_claim(job_id, marker) is not None:  # a retried send landed
                    fresh = await self._read_job(job_id)
                    if fresh is not None:
                        return await self._claimed_now(known, owner, marker, None, fresh)
                raise AlreadyClaimed(f"job {job_id!r} is already claimed")
            if isinstance(second, zk_exc.NoNode):
                self._view.jobs.pop(job_id, None)
                raise self._missing(job_id)
            # BadVersion: our copy of the job is stale (e.g. a build failure was counted).
            fresh = await self._read_job(job_id)
            if fresh is None:
                self._view.jobs.pop(job_id, None)
                raise self._missing(job_id)
            self._view.jobs[job_id] = known = fresh
        raise AlreadyClaimed(f"job {job_id!r} keeps changing; try again")

    async def _claimed_now(
        self, known: Job, owner: str, marker: str, stat: Any, fresh: Job | None = None
    ) -> Claim:
        job_id = known.uuid
        if stat is None:  # recovered after a lost reply: take the stat from a read
            assert fresh is not None
            _, stat = await self.zk.call(self.zk.c.get, f"/jobs/{job_id}")
        claimed_at = stat.modified / 1000.0
        self._offset = claimed_at - time.time()
        version = stat.version
        if known.due_at > claimed_at:
            await self._release(job_id, version)
            raise NotYetDue(job_id, known.due_at - claimed_at)
        copy = self._with_state(known)
        copy.version = version
        copy.state = JobState.CLAIMED
        cached = self._view.jobs.get(job_id)
        if cached is not None:
            cached.version = version
        claim = Claim(copy, owner, stat.last_modified_zxid)
        self._held[job_id] = claim
        self._versions[job_id] = version
        self._view.claimed.add(job_id)
        return claim

    async def _own_claim(self, job_id: str, marker: str) -> Any:
        """After NodeExists: was it our own create, retried after a lost reply?"""
        try:
            raw, stat = await self.zk.call(self.zk.c.get, f"/claims/{job_id}")
        except zk_exc.NoNode:
            return None
        data = loads(raw) or {}
        return stat if data.get("marker") == marker else None

    async def _release(self, job_id: str, version: int) -> None:
        """Drop our claim node if the job is still at the version our claim wrote."""

        def build(tx: Transaction) -> None:
            tx.check_version(f"/jobs/{job_id}", version)
            tx.delete(f"/claims/{job_id}", -1)

        with contextlib.suppress(BoardUnavailable):
            await multi(self.zk, build)

    def _check(self, claim: Claim) -> int:
        held = self._held.get(claim.job.uuid)
        if held is None or held.token != claim.token:
            raise ClaimLost(
                f"job {claim.job.uuid!r}: claim {claim.fence!r} is no longer held "
                f"(session lost, or already released)"
            )
        return self._versions[claim.job.uuid]

    def _drop(self, job_id: str) -> None:
        self._held.pop(job_id, None)
        self._versions.pop(job_id, None)

    async def _clean_lost_claims(self) -> None:
        """After a reconnect: drop claims we gave up on while disconnected."""
        lost, self._held_lost = self._held_lost, []
        for claim in lost:
            await self._release(claim.job.uuid, claim.job.version)

    async def abandon(self, claim: Claim) -> None:
        version = self._check(claim)
        job_id = claim.job.uuid

        def build(tx: Transaction) -> None:
            tx.check_version(f"/jobs/{job_id}", version)
            tx.delete(f"/claims/{job_id}", -1)

        responses = await multi(self.zk, build)
        self._drop(job_id)
        if failed(responses):
            raise ClaimLost(
                f"job {job_id!r}: claim {claim.fence!r} was lost before it was given back"
            )
        self._view.claimed.discard(job_id)

    async def consume(
        self, claim: Claim, outcome: JobOutcome, *, next_job: Job | None = None
    ) -> None:
        await self._finish(claim, outcome, None, next_job)

    async def trash(self, claim: Claim, reason: str) -> None:
        job = claim.job
        outcome = JobOutcome(job.uuid, job.flow_id, "TRASHED", error=reason)
        await self._finish(claim, outcome, reason, None)

    async def _finish(
        self, claim: Claim, outcome: JobOutcome, trash: str | None, next_job: Job | None
    ) -> None:
        """Remove the job and its claim, record the outcome (and post the next run), atomically."""
        version = self._check(claim)
        job_id = claim.job.uuid
        record = {"outcome": outcome.to_dict(), "job": claim.job.to_dict()}

        def build(tx: Transaction, with_next: bool) -> None:
            tx.check_version(f"/jobs/{job_id}", version)
            tx.delete(f"/claims/{job_id}", -1)
            tx.delete(f"/jobs/{job_id}", -1)
            tx.create(f"/results/{job_id}", dumps(record))
            if trash is not None:
                tx.create(f"/trash/{job_id}", dumps({"job": claim.job.to_dict(), "reason": trash}))
            if with_next and next_job is not None:
                tx.create(f"/jobs/{next_job.uuid}", dumps(next_job.to_dict()))
                if next_job.idempotency_key is not None:
                    tx.create("/" + key_node(next_job.idempotency_key), next_job.uuid.encode())

        for with_next in (True, False):
            responses = await multi(self.zk, lambda tx, w=with_next: build(tx, w))  # type: ignore[misc]
            if not failed(responses):
                self._drop(job_id)
                self._view.jobs.pop(job_id, None)
                self._view.claimed.discard(job_id)
                if with_next and next_job is not None:  # read our own write into the cache
                    posted = await self._read_job(next_job.uuid)
                    if posted is not None:
                        self._view.jobs.setdefault(posted.uuid, posted)
                return
            if isinstance(responses[0], zk_exc.ZKError):  # the job moved on without us
                self._drop(job_id)
                if await read_result(self.zk, job_id) is not None:  # our earlier attempt landed
                    return
                raise ClaimLost(f"job {job_id!r}: claim {claim.fence!r} is gone")
            if next_job is None:
                break
            # The next run exists already (posted by an earlier attempt): finish without it.
        raise BoardUnavailable(f"board {self.url}: could not finish job {job_id!r}")

    async def record_build_failure(self, claim: Claim, error: str) -> int:
        version = self._check(claim)
        job_id = claim.job.uuid
        try:
            raw, stat = await self.zk.call(self.zk.c.get, f"/jobs/{job_id}")
        except zk_exc.NoNode:
            raise self._missing(job_id) from None
        if stat.version != version:
            self._drop(job_id)
            raise ClaimLost(f"job {job_id!r}: claim {claim.fence!r} is gone")
        data = loads(raw)
        data["build_failures"] = data.get("build_failures", 0) + 1
        data["last_build_error"] = error[:2000]
        try:
            new = await self.zk.call(self.zk.c.set, f"/jobs/{job_id}", dumps(data), version)
        except zk_exc.BadVersion:
            self._drop(job_id)
            raise ClaimLost(f"job {job_id!r}: claim {claim.fence!r} is gone") from None
        self._versions[job_id] = new.version
        cached = self._view.jobs.get(job_id)
        if cached is not None:  # keep the cache in step with what we wrote
            cached.build_failures = int(data["build_failures"])
            cached.version = new.version
        return int(data["build_failures"])

    async def find_owner(self, job: Job | str) -> str | None:
        try:
            raw, _ = await self.zk.call(self.zk.c.get, f"/claims/{self._id(job)}")
        except zk_exc.NoNode:
            return None
        owner = (loads(raw) or {}).get("owner")
        return None if owner is None else str(owner)

    # -- outcomes ----------------------------------------------------------------

    async def outcome(self, job_id: str) -> JobOutcome | None:
        found = await read_result(self.zk, job_id)
        return None if found is None else JobOutcome.from_dict(found["outcome"])

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
