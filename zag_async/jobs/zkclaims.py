"""Claims on a ZooKeeper job board: taking, checking and giving up ownership of jobs.

Claiming is the board's subtle part (fencing, lost replies, lost sessions), so
it has a room of its own; the board delegates to one `ZkClaims` per board object.

A claim is one multi: create the ephemeral claim node and rewrite the job node
at the version we know. The job node's new modification zxid is the fencing
token (it only grows), its modification time is ZooKeeper's clock at the claim,
and every later step of the claim (consume, trash, abandon, counting a failed
build) checks the job node's version, so an owner whose claim was lost and
retaken cannot touch the job any more.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable
from typing import Any

from aiozk import exc as zk_exc
from aiozk.transaction import Transaction

from ..errors import AlreadyClaimed, BoardUnavailable, ClaimLost, JobNotFound, NotYetDue
from .records import Claim, Job, JobOutcome, JobState
from .zkcache import JobCache
from .zknodes import ZkClock, dumps, failed, key_node, loads, multi, read_result
from .zksession import ZkSession

__all__ = ["ZkClaims"]


class ZkClaims:
    """The claims taken through one board object, and the protocol that takes them.

    Args:
        zk: the board's session.
        view: the board's job cache (kept in step with what claims write).
        clock: the board's clock (a claim reads ZooKeeper's time).
        url: the board's URL (for error messages).
        missing: the error for a job that is not on the board.
    """

    def __init__(
        self,
        zk: ZkSession,
        *,
        view: JobCache,
        clock: ZkClock,
        url: str,
        missing: Callable[[str], JobNotFound],
    ) -> None:
        self.zk = zk
        self.url = url
        self._view = view
        self._clock = clock
        self._missing = missing
        self._held: dict[str, Claim] = {}  # claims taken through this board object
        self._versions: dict[str, int] = {}  # held job -> the job node's version we wrote
        self._held_lost: list[Claim] = []  # claims to clean up once reconnected

    def holds(self, claim: Claim) -> bool:
        """True while `claim` is held through this board object (as far as it knows)."""
        held = self._held.get(claim.job.uuid)
        return held is not None and held.token == claim.token

    def session_lost(self) -> None:
        """The session is gone, and every claim with it: forget them (cleaned up later)."""
        self._held_lost.extend(self._held.values())
        self._held.clear()
        self._versions.clear()

    async def claim(self, job_id: str, owner: str) -> Claim:
        """Claim the job for `owner`; raises AlreadyClaimed, NotYetDue or JobNotFound."""
        known = self._view.jobs.get(job_id)
        if known is None:
            known = await self._view.read(job_id)
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
                    fresh = await self._view.read(job_id)
                    if fresh is not None:
                        return await self._claimed_now(known, owner, marker, None, fresh)
                raise AlreadyClaimed(f"job {job_id!r} is already claimed")
            if isinstance(second, zk_exc.NoNode):
                self._view.jobs.pop(job_id, None)
                raise self._missing(job_id)
            # BadVersion: our copy of the job is stale (e.g. a build failure was counted).
            fresh = await self._view.read(job_id)
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
        self._clock.observe(claimed_at)
        version = stat.version
        if known.due_at > claimed_at:
            await self._release(job_id, version)
            raise NotYetDue(job_id, known.due_at - claimed_at)
        copy = self._view.with_state(known)
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

    async def clean_lost(self) -> None:
        """After a reconnect: drop claims we gave up on while disconnected."""
        lost, self._held_lost = self._held_lost, []
        for claim in lost:
            await self._release(claim.job.uuid, claim.job.version)

    async def abandon(self, claim: Claim) -> None:
        """Give the job back so another owner can claim it."""
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

    async def finish(
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
                    posted = await self._view.read(next_job.uuid)
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
        """Count a failed attempt to build the job's flow; returns the count so far."""
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

    async def park(self, claim: Claim, due_at: float) -> None:
        """Give the job back due at `due_at` (ZooKeeper's clock), in one multi."""
        version = self._check(claim)
        job_id = claim.job.uuid
        try:
            raw, stat = await self.zk.call(self.zk.c.get, f"/jobs/{job_id}")
        except zk_exc.NoNode:
            self._drop(job_id)
            raise ClaimLost(f"job {job_id!r}: claim {claim.fence!r} is gone") from None
        data = loads(raw)
        data.pop("delay", None)
        data.pop("claim", None)
        data["due_at"] = due_at
        payload = dumps(data)

        def build(tx: Transaction) -> None:
            tx.set_data(f"/jobs/{job_id}", payload, version)
            tx.delete(f"/claims/{job_id}", -1)

        responses = await multi(self.zk, build)
        self._drop(job_id)
        if failed(responses) or stat.version != version:
            raise ClaimLost(f"job {job_id!r}: claim {claim.fence!r} was lost before it was parked")
        self._view.claimed.discard(job_id)
        cached = self._view.jobs.get(job_id)
        if cached is not None:
            cached.due_at = due_at
            cached.version = version + 1

    async def wake(self, job_id: str, now: float) -> bool:
        """Make an unclaimed delayed job due now, and leave a marker under `wakes/`
        so every board's cache re-reads it. False if it is gone or claimed."""
        for _ in range(3):
            try:
                raw, stat = await self.zk.call(self.zk.c.get, f"/jobs/{job_id}")
            except zk_exc.NoNode:
                return False
            data = loads(raw)
            data.pop("delay", None)
            data["due_at"] = 0.0
            payload = dumps(data)

            def build(
                tx: Transaction, payload: bytes = payload, version: int = stat.version
            ) -> None:
                # Creating and deleting the claim node fails the whole multi if the job is claimed.
                tx.create(f"/claims/{job_id}", b"")
                tx.delete(f"/claims/{job_id}", -1)
                tx.set_data(f"/jobs/{job_id}", payload, version)
                tx.create(f"/wakes/{int(now)}-{job_id}-", job_id.encode(), sequential=True)

            responses = await multi(self.zk, build)
            if not failed(responses):
                cached = self._view.jobs.get(job_id)
                if cached is not None:
                    cached.due_at = 0.0
                    cached.version = stat.version + 1
                await self._prune_wakes(now)
                return True
            if isinstance(responses[0], zk_exc.NodeExists):
                return False  # claimed: its holder looks for signals before parking
        return False

    async def _prune_wakes(self, now: float) -> None:
        """Drop wake markers older than a minute (every cache has read them by then)."""
        with contextlib.suppress(BoardUnavailable, zk_exc.ZKError):
            names = await self.zk.call(self.zk.c.get_children, "/wakes")
            for name in names:
                stamp = name.split("-", 1)[0]
                if stamp.isdigit() and int(stamp) < now - 60:
                    with contextlib.suppress(zk_exc.NoNode):
                        await self.zk.call(self.zk.c.delete, f"/wakes/{name}")
