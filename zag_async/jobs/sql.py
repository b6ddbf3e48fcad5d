"""`sqlite+aiosqlite:///app.db` and `postgresql+asyncpg://...`: job boards in SQL.

The embedded default has no ZooKeeper, yet jobs must survive the process: a
SQL board keeps them in the same database as the flows they run (same
migrations, `zag_schema_version`), so given the backend's URL one file or
database holds everything.

This module is the board itself (posting, listing, outcomes, schedules); it is
built from rooms of its own: the database and its clock (`sqldb`), jobs as rows
(`sqlrows`), claims as leases renewed by a heartbeat (`sqlclaims`), wake-ups by
LISTEN/NOTIFY or polling (`sqlnotify`) and locks (`sqllock`).

What a SQL board guarantees, beside the `JobBoard` contract:

- A claim is a lease (default 30 s, renewed every lease/3 s). If its owner
  dies, the job is claimable again once the lease runs out; a takeover gets a
  new, higher fencing token. `release_owner(owner)` lets a restarted process
  with a stable name give its previous incarnation's claims back at once.
- Due times and leases use the database's clock.
- PostgreSQL claims skip rows other claimers have locked (`FOR UPDATE SKIP
  LOCKED`) and wake-ups come by LISTEN/NOTIFY; SQLite sees other processes'
  changes by polling every `poll_interval` seconds while someone watches.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, RowMapping, cast, delete, func, literal_column, select, update
from sqlalchemy.sql.elements import ColumnElement

from ..background import Background
from ..errors import ConfigurationError, JobNotFound
from ..persistence.schema import job_keys, job_results, job_schedules, jobs
from .base import PARKED, JobBoard
from .records import Claim, FinishedJob, Holder, Job, JobOutcome, JobState
from .schedule import Schedule
from .sqlclaims import SqlClaims
from .sqldb import BoardDb
from .sqllock import hold_lock
from .sqlnotify import Wakeups
from .sqlrows import claimed_now, insert_job, job_from_row, unclaimed_now

if TYPE_CHECKING:
    from ..persistence.base import Backend

__all__ = ["SqlBoard"]


class SqlBoard(JobBoard):
    """Jobs, claims (leases), schedules and locks in SQLite or PostgreSQL.

    Args:
        url: `sqlite+aiosqlite:///path.db` or `postgresql+asyncpg://user@host/db`.
        backend: where posted jobs' flow records are created (often the
            same database).
        lease: seconds a claim or lock lasts without renewal (renewed every lease/3).
        poll_interval: seconds between looks for other processes' changes (SQLite
            while someone watches; PostgreSQL only while its listener is down).
        connect_timeout: seconds to wait for a connection.
    """

    releases_owners = True

    def __init__(
        self,
        url: str,
        *,
        backend: Backend | None = None,
        persistence: Backend | None = None,
        lease: float = 30.0,
        poll_interval: float = 0.5,
        connect_timeout: float = 5.0,
    ) -> None:
        super().__init__(url, backend=backend, persistence=persistence)
        if not isinstance(lease, (int, float)) or lease <= 0:
            raise ConfigurationError(f"lease must be > 0 seconds, got {lease!r}")
        if not isinstance(poll_interval, (int, float)) or poll_interval <= 0:
            raise ConfigurationError(f"poll_interval must be > 0 seconds, got {poll_interval!r}")
        self.lease = float(lease)
        self.db = BoardDb(url, connect_timeout=connect_timeout)
        self._tasks = Background(f"zag-sqlboard {self.db.display}")
        self._leases = SqlClaims(
            self.db,
            lease=self.lease,
            to_job=self._job,
            missing=self._missing,
            lost=self._claims_lost,
            changed=self._changed,
        )
        self._wakeups = Wakeups(
            self.db,
            notify=self._notify,
            tasks=self._tasks,
            poll_interval=poll_interval,
            recheck=self.lease / 2,
            next_event=self._next_event,
        )
        self._opened = False

    # -- lifecycle ---------------------------------------------------------------

    async def open(self) -> None:
        if self._opened:
            return
        self._opened = True
        await self.db.open()
        await self._tasks.start()
        self._tasks.spawn(self._leases.heartbeat(), name="zag-sqlboard-heartbeat")
        self._wakeups.open()
        await self.db.now()

    async def aclose(self) -> None:
        if self._closed:
            return
        await super().aclose()
        self._wakeups.close()
        try:
            await self._tasks.aclose()
            with contextlib.suppress(Exception):
                await self._leases.release_all()
        finally:
            await self.db.aclose()

    def _changed(self) -> None:
        self._wakeups.changed()

    def holds(self, claim: Claim) -> bool:
        return self._leases.holds(claim)

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        unwatch = self._wakeups.watch()
        unsubscribe = super().subscribe(callback)

        def both() -> None:
            unsubscribe()
            unwatch()

        return both

    @property
    def listening(self) -> bool:
        """PostgreSQL: True while the LISTEN connection is up (else changes are polled)."""
        return self._wakeups.listening

    async def renew_leases(self) -> bool:
        """Renew this board's leases now (the heartbeat does so every lease/3 seconds).

        Claims found gone (taken over after expiry, or released by
        `release_owner`) are dropped and `on_claims_lost` callbacks run; locks
        found gone have their bodies cancelled. False if the database could not
        be reached.
        """
        return await self._leases.renew()

    async def refresh(self) -> None:
        """Nothing to refresh: every listing reads the database (here for symmetry
        with the ZooKeeper board, whose listings come from a cache)."""

    # -- clock -------------------------------------------------------------------

    async def now(self) -> float:
        """The database's clock (epoch seconds)."""
        return await self.db.now()

    def estimate_now(self) -> float:
        """The database's clock estimated from the last one seen (no round trip)."""
        return self.db.estimate_now()

    async def _next_event(self) -> float | None:
        """Seconds until the next delayed job is due or the next lease runs out."""
        now = self.db.now_sql
        soonest = select(
            func.min(jobs.c.due_at).filter(jobs.c.due_at > now),
            func.min(jobs.c.lease_until).filter(jobs.c.lease_until > now),
            now,
        )
        async with self.db.read() as conn:
            due, lease, db_now = (await conn.execute(soonest)).one()
        times = [t for t in (due, lease) if t is not None]
        return None if not times else min(times) - db_now

    # -- jobs --------------------------------------------------------------------

    def _job(self, row: Mapping[str, Any] | RowMapping) -> Job:
        return job_from_row(row, self)

    async def _post(self, job: Job, delay: float | None) -> Job:
        async with self.db.write() as conn:
            row = await insert_job(self.db, conn, job, delay)
            if row is not None:
                await self.db.changed(conn)
        if row is None:  # the key (or this very job) was posted before
            found = (
                None if job.idempotency_key is None else await self.find_key(job.idempotency_key)
            )
            return found if found is not None else await self.get(job.uuid)
        self.db.observe(row["db_now"])
        self._changed()
        return self._job(row)

    async def find_key(self, key: str) -> Job | None:
        query = select(job_keys.c.job_uuid).where(job_keys.c.key == key)
        async with self.db.read() as conn:
            job_id = (await conn.execute(query)).scalar_one_or_none()
            if job_id is None:
                return None
            rows = await conn.execute(self._select().where(jobs.c.uuid == job_id))
            row = rows.mappings().first()
            if row is None:
                result = await conn.execute(
                    select(job_results.c.job, job_results.c.trash_reason).where(
                        job_results.c.job_uuid == job_id
                    )
                )
                finished = result.first()
        if row is not None:
            return self._job(row)
        if finished is None:
            return None
        done = Job.from_dict(json.loads(finished.job))
        done.board = self
        done.state = JobState.COMPLETE if finished.trash_reason is None else JobState.TRASHED
        return done

    def _select(self) -> Any:
        return select(*jobs.c, self.db.now_sql.label("db_now"))

    async def jobs(
        self,
        *,
        state: JobState | None = None,
        include_delayed: bool = True,
        limit: int | None = None,
    ) -> list[Job]:
        query = self._select().order_by(jobs.c.priority.desc(), jobs.c.seq)
        if state is JobState.CLAIMED:
            query = query.where(claimed_now(self.db))
        elif state is JobState.UNCLAIMED:
            query = query.where(unclaimed_now(self.db))
        elif state is not None:
            return []
        if not include_delayed:
            query = query.where(jobs.c.due_at <= self.db.now_sql)
        if limit is not None:
            query = query.limit(limit)
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).mappings().all()
        if rows:
            self.db.observe(rows[0]["db_now"])
        return [self._job(row) for row in rows]

    async def get(self, job_id: str) -> Job:
        async with self.db.read() as conn:
            rows = await conn.execute(self._select().where(jobs.c.uuid == job_id))
            row = rows.mappings().first()
        if row is None:
            raise self._missing(job_id)
        return self._job(row)

    # -- claims (leases: sqlclaims) ------------------------------------------------

    async def claim(self, job: Job | str, owner: str) -> Claim:
        return await self._leases.claim(self._id(job), owner)

    async def abandon(self, claim: Claim) -> None:
        await self._leases.abandon(claim)

    async def park(self, claim: Claim, *, delay: float | None) -> None:
        due = PARKED if delay is None else self.db.now_sql + max(delay, 0.0)
        await self._leases.abandon(claim, due_at=due)

    async def wake(self, job_id: str) -> bool:
        async with self.db.write() as conn:
            result = await conn.execute(
                update(jobs).where(jobs.c.uuid == job_id, unclaimed_now(self.db)).values(due_at=0.0)
            )
            if result.rowcount == 1:
                await self.db.changed(conn)
        if result.rowcount == 1:
            self._changed()
        return bool(result.rowcount == 1)

    async def next_due(self) -> float | None:
        now = self.db.now_sql
        soonest = select(func.min(jobs.c.due_at), now).where(
            jobs.c.due_at > now, unclaimed_now(self.db)
        )
        async with self.db.read() as conn:
            due, db_now = (await conn.execute(soonest)).one()
        return None if due is None else float(due - db_now)

    async def consume(
        self, claim: Claim, outcome: JobOutcome, *, next_job: Job | None = None
    ) -> None:
        await self._leases.finish(claim, outcome, None, next_job)

    async def trash(self, claim: Claim, reason: str) -> None:
        await self._leases.finish(claim, JobOutcome.trashed(claim.job, reason), reason, None)

    async def record_build_failure(self, claim: Claim, error: str) -> int:
        return await self._leases.record_build_failure(claim, error)

    async def find_owner(self, job: Job | str) -> str | None:
        query = select(jobs.c.owner).where(jobs.c.uuid == self._id(job), claimed_now(self.db))
        async with self.db.read() as conn:
            owner = (await conn.execute(query)).scalar_one_or_none()
        return None if owner is None else str(owner)

    async def claim_owners(self) -> set[str]:
        query = select(jobs.c.owner).where(claimed_now(self.db)).distinct()
        async with self.db.read() as conn:
            return {str(owner) for owner in (await conn.execute(query)).scalars()}

    async def holders(self, of: Sequence[Job | str]) -> dict[str, Holder]:
        ids = [self._id(job) for job in of]
        if not ids:
            return {}
        query = select(jobs.c.uuid, jobs.c.owner, jobs.c.lease_until).where(
            jobs.c.uuid.in_(ids), claimed_now(self.db)
        )
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).all()
        return {r.uuid: Holder(str(r.owner), lease_until=float(r.lease_until)) for r in rows}

    async def release_owner(self, owner: str) -> list[str]:
        """Give back every claim `owner` holds, except those taken through this board object.

        For a restarted process with a stable name: its previous incarnation's
        claims become claimable at once instead of when their leases run out
        (that incarnation, if still alive, loses them at its next renewal).
        Returns the ids of the jobs released.
        """
        return await self._leases.release_owner(owner)

    # -- outcomes ----------------------------------------------------------------

    async def outcome(self, job_id: str) -> JobOutcome | None:
        query = select(job_results.c.outcome).where(job_results.c.job_uuid == job_id)
        async with self.db.read() as conn:
            found = (await conn.execute(query)).scalar_one_or_none()
        return None if found is None else JobOutcome.from_dict(json.loads(found))

    async def finished(
        self, *, limit: int = 100, states: Collection[str] | None = None
    ) -> list[FinishedJob]:
        c = job_results.c
        # Ties (SQLite's clock counts milliseconds) go by insertion: SQLite's rowid.
        tie = c.job_uuid if self.db.postgres else literal_column("rowid").desc()
        query = select(c.outcome, c.job, c.finished_at).order_by(c.finished_at.desc(), tie)
        if states is not None:
            query = query.where(self._outcome_state().in_(list(states)))
        async with self.db.read() as conn:
            rows = (await conn.execute(query.limit(max(limit, 0)))).all()
        return [self._finished(row) for row in rows]

    async def find_finished(self, job_id: str) -> FinishedJob | None:
        c = job_results.c
        query = select(c.outcome, c.job, c.finished_at).where(c.job_uuid == job_id)
        async with self.db.read() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else self._finished(row)

    def _finished(self, row: Any) -> FinishedJob:
        """A `zag_job_results` row (outcome, job, finished_at) as a finished job."""
        outcome = JobOutcome.from_dict(json.loads(row.outcome))
        job = Job.from_dict(json.loads(row.job))
        job.board = self
        job.state = JobState.TRASHED if outcome.state == "TRASHED" else JobState.COMPLETE
        return FinishedJob(job, outcome, float(row.finished_at))

    def _outcome_state(self) -> ColumnElement[str]:
        """SQL: the state inside a result's outcome JSON (stored as text)."""
        if self.db.postgres:
            return func.json_extract_path_text(cast(job_results.c.outcome, JSON), "state")
        return func.json_extract(job_results.c.outcome, "$.state")

    async def _wait_outcome(self, job_id: str) -> JobOutcome:
        changed = asyncio.Event()
        unsubscribe = self.subscribe(changed.set)
        try:
            while True:
                changed.clear()
                found = await self.outcome(job_id)
                if found is not None:
                    return found
                try:
                    await self.get(job_id)
                except JobNotFound:  # finished just now, or never on the board
                    found = await self.outcome(job_id)
                    if found is not None:
                        return found
                    raise
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._wakeups.poll_interval * 4):
                        await changed.wait()
        finally:
            unsubscribe()

    # -- schedules ---------------------------------------------------------------

    async def _load_schedules(self) -> dict[str, Schedule]:
        async with self.db.read() as conn:
            rows = (await conn.execute(select(job_schedules))).all()
        return {row.name: Schedule.from_dict(json.loads(row.data)) for row in rows}

    async def _save_schedules(self, schedules: dict[str, Schedule], *, replace: bool) -> list[str]:
        async with self.db.write() as conn:
            if self.db.postgres:  # savers of schedules take turns
                await conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7263540193)")
            rows = (await conn.execute(select(job_schedules))).all()
            current = {row.name: Schedule.from_dict(json.loads(row.data)) for row in rows}
            added = [n for n in schedules if current.get(n) != schedules[n]]
            removed = [n for n in current if n not in schedules] if replace else []
            stale = set(removed) | {n for n in added if n in current}
            if removed or added:
                await conn.execute(
                    delete(job_schedules).where(job_schedules.c.name.in_(removed + added))
                )
            if added:
                await conn.execute(
                    job_schedules.insert(),
                    [{"name": n, "data": json.dumps(schedules[n].to_dict())} for n in added],
                )
            if stale:
                pending = (
                    await conn.execute(
                        delete(jobs)
                        .where(jobs.c.schedule.in_(stale), unclaimed_now(self.db))
                        .returning(jobs.c.idempotency_key)
                    )
                ).scalars()
                keys = [key for key in pending if key is not None]
                if keys:
                    await conn.execute(delete(job_keys).where(job_keys.c.key.in_(keys)))
                await self.db.changed(conn)
        if stale:
            self._changed()
        return added

    # -- locks -------------------------------------------------------------------

    def lock(self, name: str) -> contextlib.AbstractAsyncContextManager[None]:
        if not name:
            raise ConfigurationError(f"a lock needs a non-empty name, got {name!r}")
        return hold_lock(
            self._leases,
            name,
            subscribe=self.subscribe,
            changed=self._changed,
            poll_interval=self._wakeups.poll_interval,
        )
