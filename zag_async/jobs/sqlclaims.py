"""Claims on a SQL job board: leases taken, renewed by a heartbeat, fenced by a token.

SQL has no ephemeral nodes, so a claim cannot vanish with its owner's session
as on ZooKeeper. Instead a claim is a LEASE: the row's `owner` holds the job
until `lease_until` (the database's clock), and the board that took it renews
it every lease/3 seconds. An owner that dies stops renewing; once the lease
has run out anyone may claim the job (a takeover), which gives it a new
fencing token. Every later step of a claim (abandon, consume, trash, counting
a failed build) matches the row's token, so an owner whose lease was taken over
cannot touch the job any more, and the conductor hands the token to the flow's
storage (`Claim.fence`) so it cannot write the flow either.

When a renewal finds a lease gone (taken over, or released by
`release_owner`), or renewals have failed for a whole lease, the claim is
dropped: `holds()` turns False and the board's `on_claims_lost` callbacks run.
Locks (`sqllock`) are leases too; the same heartbeat renews them.

A claim is one UPDATE statement. Tokens come from the PostgreSQL sequence
`zag_job_tokens`, or on SQLite from the "token" counter row, which a trigger
moves in the claim's own statement (SQLite writes are serialized, so the
counter cannot go backwards).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from sqlalchemy import ColumnElement, delete, func, select, text, update

from ..backoff import Backoff
from ..errors import AlreadyClaimed, BoardUnavailable, ClaimLost, JobNotFound, NotYetDue
from ..persistence.schema import job_counters, job_locks, job_results, jobs
from .records import Claim, Job, JobOutcome
from .sqldb import NOTIFY_CHANNEL, BoardDb
from .sqlrows import insert_job, unclaimed_now

__all__ = ["SqlClaims"]

logger = logging.getLogger("zag_async.jobs")

#: where the SQLite token counter lives
_TOKEN = job_counters.c.name == "token"

#: Finishing a job on PostgreSQL in one statement: remove it if the token still
#: matches, record the outcome, notify. `recorded`: an earlier attempt landed.
_FINISH_PG = text(
    f"""
WITH gone AS (
    DELETE FROM zag_jobs WHERE uuid = :uuid AND token = :token RETURNING uuid
), kept AS (
    INSERT INTO zag_job_results (job_uuid, outcome, job, trash_reason, finished_at)
    SELECT uuid, :outcome, :job, :trash, EXTRACT(EPOCH FROM statement_timestamp()) FROM gone
    RETURNING job_uuid
)
SELECT (SELECT count(*) FROM kept) AS finished,
       (SELECT count(*) FROM zag_job_results WHERE job_uuid = :uuid) AS recorded,
       pg_notify('{NOTIFY_CHANNEL}', '') AS notified
"""
)


class SqlClaims:
    """The leases (claims and locks) held through one board object, and how they are taken.

    Args:
        db: the board's database.
        lease: seconds a claim or lock lasts without renewal.
        to_job: makes a `Job` of a selected row.
        missing: the error for a job that is not on the board.
        lost: called when held claims were lost (the board's `on_claims_lost`).
        changed: called after this process changed jobs (in-process wake-ups).
    """

    def __init__(
        self,
        db: BoardDb,
        *,
        lease: float,
        to_job: Callable[[Mapping[str, Any]], Job],
        missing: Callable[[str], JobNotFound],
        lost: Callable[[], None],
        changed: Callable[[], None],
    ) -> None:
        self.db = db
        self.lease = lease
        self._to_job = to_job
        self._missing = missing
        self._lost = lost
        self._changed = changed
        self._held: dict[str, Claim] = {}  # job id -> the claim taken through this board
        self._locks: dict[str, Callable[[], None]] = {}  # lock holder id -> its on-lost
        self._renewed_at = time.monotonic()

    # -- the claims held here ----------------------------------------------------

    def holds(self, claim: Claim) -> bool:
        held = self._held.get(claim.job.uuid)
        return held is not None and held.token == claim.token

    def tokens(self) -> list[int]:
        return [claim.token for claim in self._held.values()]

    def _check(self, claim: Claim) -> None:
        if not self.holds(claim):
            raise ClaimLost(
                f"job {claim.job.uuid!r}: claim {claim.fence!r} is no longer held "
                f"(lease lost or taken over, or already released)"
            )

    def _drop(self, claim: Claim) -> None:
        if self.holds(claim):
            del self._held[claim.job.uuid]

    # -- taking a claim ----------------------------------------------------------

    async def claim(self, job_id: str, owner: str) -> Claim:
        """Claim the job for `owner` if nobody holds it; raises AlreadyClaimed, NotYetDue
        or JobNotFound."""
        for _ in range(3):
            row = await self._take(job_id, owner)
            if row is not None:
                self.db.observe(row["db_now"])
                claim = Claim(self._to_job(row), owner, int(row["token"]))
                self._held[job_id] = claim
                return claim
            refusal = await self._refusal(job_id)
            if refusal is not None:
                raise refusal
            # Free and due by now (it fell due between the two statements): again.
        raise AlreadyClaimed(f"job {job_id!r} is being claimed by another owner")

    async def _take(self, job_id: str, owner: str) -> Mapping[str, Any] | None:
        """The claiming UPDATE: the job's row as claimed, or None if it was not free."""
        now = self.db.now_sql
        values: dict[str, Any] = {
            "owner": owner,
            "lease_until": now + self.lease,
            "version": jobs.c.version + 1,
        }
        free = (jobs.c.uuid == job_id, unclaimed_now(self.db), jobs.c.due_at <= now)
        if self.db.postgres:
            # Claimers of one job skip each other's row locks instead of queueing.
            target = select(jobs.c.seq).where(*free).with_for_update(skip_locked=True)
            statement = update(jobs).where(jobs.c.seq == target.scalar_subquery())
            values["token"] = func.nextval("zag_job_tokens")
        else:
            # The next token from the counter row (a trigger moves the counter).
            statement = update(jobs).where(*free)
            values["token"] = select(job_counters.c.value + 1).where(_TOKEN).scalar_subquery()
        returning = statement.values(values).returning(*jobs.c, now.label("db_now"))
        async with self.db.single() as conn:  # one statement: its own transaction
            row = (await conn.execute(returning)).mappings().first()
        return None if row is None else dict(row)

    async def _refusal(self, job_id: str) -> Exception | None:
        """Why a claim of `job_id` took no row (None: it looks free and due now)."""
        now = self.db.now_sql
        query = select(jobs.c.owner, jobs.c.lease_until, jobs.c.due_at, now.label("db_now"))
        async with self.db.read() as conn:
            row = (await conn.execute(query.where(jobs.c.uuid == job_id))).mappings().first()
        if row is None:
            return self._missing(job_id)
        if row["owner"] is not None and row["lease_until"] > row["db_now"]:
            return AlreadyClaimed(f"job {job_id!r} is claimed by {row['owner']!r}")
        if row["due_at"] > row["db_now"]:
            return NotYetDue(job_id, row["due_at"] - row["db_now"])
        return None

    # -- steps of a held claim -----------------------------------------------------

    async def _retried(self, claim: Claim, step: Callable[[], Any]) -> Any:
        """Run an idempotent step of `claim`, riding out a short database outage.

        If the database stays away, the claim is dropped (so its lease lapses
        and the job is taken over) and BoardUnavailable raised.
        """
        backoff = Backoff(first=0.1, cap=2.0, within=max(self.lease / 2, 1.0))
        async for attempt in backoff.attempts():
            try:
                return await step()
            except BoardUnavailable:
                if attempt.last:
                    self._drop(claim)
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def abandon(
        self, claim: Claim, *, due_at: ColumnElement[float] | float | None = None
    ) -> None:
        """Give the job back so another owner can claim it (due at `due_at`, when
        given: a parked job)."""
        self._check(claim)
        values: dict[str, Any] = {
            "owner": None,
            "lease_until": None,
            "version": jobs.c.version + 1,
        }
        if due_at is not None:
            values["due_at"] = due_at

        async def step() -> int:
            async with self.db.write() as conn:
                result = await conn.execute(
                    update(jobs)
                    .where(jobs.c.uuid == claim.job.uuid, jobs.c.token == claim.token)
                    .values(values)
                )
                if result.rowcount == 1:
                    await self.db.changed(conn)
                return int(result.rowcount)

        released = await self._retried(claim, step)
        self._drop(claim)
        if released != 1:
            raise ClaimLost(f"job {claim.job.uuid!r}: claim {claim.fence!r} was taken over")
        self._changed()

    async def finish(
        self, claim: Claim, outcome: JobOutcome, trash: str | None, next_job: Job | None
    ) -> None:
        """Remove the job, record its outcome (and post the next run), in one transaction."""
        self._check(claim)
        job = claim.job
        now = self.db.now_sql

        async def step() -> bool:
            async with self.db.write() as conn:
                removed = await conn.execute(
                    delete(jobs).where(jobs.c.uuid == job.uuid, jobs.c.token == claim.token)
                )
                if removed.rowcount != 1:  # taken over, or our earlier attempt landed
                    query = select(job_results.c.job_uuid).where(job_results.c.job_uuid == job.uuid)
                    return (await conn.execute(query)).first() is not None
                await conn.execute(
                    job_results.insert().values(
                        job_uuid=job.uuid,
                        outcome=json.dumps(outcome.to_dict()),
                        job=json.dumps(job.to_dict()),
                        trash_reason=trash,
                        finished_at=now,
                    )
                )
                if next_job is not None:  # None back: that run exists already
                    await insert_job(self.db, conn, next_job, None)
                await self.db.changed(conn)
                return True

        fast = self.db.postgres and next_job is None
        finished = await self._retried(
            claim, self._finish_at_once(claim, outcome, trash) if fast else step
        )
        self._drop(claim)
        if not finished:
            raise ClaimLost(f"job {job.uuid!r}: claim {claim.fence!r} was taken over")
        self._changed()

    def _finish_at_once(
        self, claim: Claim, outcome: JobOutcome, trash: str | None
    ) -> Callable[[], Awaitable[bool]]:
        """PostgreSQL, no next run: `finish` as one statement (one round trip)."""
        params = {
            "uuid": claim.job.uuid,
            "token": claim.token,
            "outcome": json.dumps(outcome.to_dict()),
            "job": json.dumps(claim.job.to_dict()),
            "trash": trash,
        }

        async def step() -> bool:
            async with self.db.single() as conn:
                row = (await conn.execute(_FINISH_PG, params)).one()
            return bool(row.finished or row.recorded)

        return step

    async def record_build_failure(self, claim: Claim, error: str) -> int:
        """Count a failed attempt to build the job's flow; returns the count so far."""
        self._check(claim)
        job_id = claim.job.uuid
        async with self.db.write() as conn:
            result = await conn.execute(
                update(jobs)
                .where(jobs.c.uuid == job_id, jobs.c.token == claim.token)
                .values(
                    build_failures=jobs.c.build_failures + 1,
                    last_build_error=error[:2000],
                    version=jobs.c.version + 1,
                )
                .returning(jobs.c.build_failures)
            )
            count = result.scalar_one_or_none()
        if count is None:
            self._drop(claim)
            raise ClaimLost(f"job {job_id!r}: claim {claim.fence!r} is gone")
        return int(count)

    async def release_owner(self, owner: str) -> list[str]:
        """Release every claim `owner` holds except those held through this board object."""
        mine = self.tokens()
        condition = [jobs.c.owner == owner]
        if mine:
            condition.append(jobs.c.token.not_in(mine))
        async with self.db.write() as conn:
            result = await conn.execute(
                update(jobs)
                .where(*condition)
                .values(owner=None, lease_until=None, version=jobs.c.version + 1)
                .returning(jobs.c.uuid)
            )
            released = [str(uuid) for uuid in result.scalars()]
            if released:
                await self.db.changed(conn)
        if released:
            self._changed()
        return released

    # -- locks (their protocol is in sqllock) --------------------------------------

    def keep_lock(self, holder: str, on_lost: Callable[[], None]) -> None:
        """Renew the lock lease of `holder` with the claims; call `on_lost` if it goes."""
        self._locks[holder] = on_lost

    def forget_lock(self, holder: str) -> None:
        self._locks.pop(holder, None)

    # -- the heartbeat -------------------------------------------------------------

    async def heartbeat(self) -> None:
        """Renew every lease held here each lease/3 seconds (sooner while failing); forever."""
        while True:
            try:
                ok = await self.renew()
            except Exception:  # a bug must not end the board's task group
                logger.exception("board %s: renewing leases failed", self.db.display)
                ok = False
            await asyncio.sleep(self.lease / 3 if ok else min(self.lease / 10, 1.0))

    async def renew(self) -> bool:
        """Renew the leases once; drop (and report) those found gone. False if it failed."""
        claims = dict(self._held)
        holders = list(self._locks)
        started = time.monotonic()
        if not claims and not holders:
            self._renewed_at = started
            return True
        now = self.db.now_sql
        try:
            async with self.db.write() as conn:
                kept: set[Any] = set()
                if claims:
                    tokens = [c.token for c in claims.values()]
                    result = await conn.execute(
                        update(jobs)
                        .where(jobs.c.token.in_(tokens), jobs.c.owner.is_not(None))
                        .values(lease_until=now + self.lease)
                        .returning(jobs.c.token)
                    )
                    kept.update(result.scalars())
                if holders:
                    result = await conn.execute(
                        update(job_locks)
                        .where(job_locks.c.holder.in_(holders))
                        .values(lease_until=now + self.lease)
                        .returning(job_locks.c.holder)
                    )
                    kept.update(result.scalars())
        except BoardUnavailable as exc:
            if time.monotonic() - self._renewed_at >= self.lease:
                logger.warning(
                    "board %s: leases not renewed for %gs: lost", self.db.display, self.lease
                )
                self._lose(list(claims.values()), holders)
            else:
                logger.warning(
                    "board %s: renewing leases failed, retrying: %s", self.db.display, exc
                )
            return False
        self._renewed_at = started
        self._lose(
            [c for c in claims.values() if c.token not in kept],
            [h for h in holders if h not in kept],
        )
        return True

    def _lose(self, claims: list[Claim], holders: list[str]) -> None:
        lost = [c for c in claims if self.holds(c)]
        for claim in lost:
            self._drop(claim)
        for holder in holders:
            on_lost = self._locks.pop(holder, None)
            if on_lost is not None:
                on_lost()
        if lost:
            self._lost()

    async def release_all(self) -> None:
        """Closing: give back every claim held here (locks release themselves)."""
        tokens, self._held = self.tokens(), {}
        if not tokens:
            return
        async with self.db.write() as conn:
            await conn.execute(
                update(jobs)
                .where(jobs.c.token.in_(tokens))
                .values(owner=None, lease_until=None, version=jobs.c.version + 1)
            )
            await self.db.changed(conn)
        self._changed()
