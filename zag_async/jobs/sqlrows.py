"""Jobs as rows of `zag_jobs`, and the one statement that adds one.

Posting a job (from `post()`, and the next run of a schedule inside `consume()`)
and reading one back happen in several parts of a SQL board; what a row holds
and how a `Job` is made from it is written here once.

A row keeps the fields a query filters or orders by in columns (priority,
posting order, due time, owner and lease, fencing token) and the rest of the
job (its factory reference) as JSON in `data`. A job counts as CLAIMED while
its owner's lease is ahead of the database's clock; after that anyone may claim
it, whatever `owner` still says.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import RowMapping, and_, or_
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from ..persistence.schema import job_keys, jobs
from .records import Job, JobState
from .sqldb import BoardDb

if TYPE_CHECKING:
    from .base import JobBoard

__all__ = ["claimed_now", "insert_job", "job_from_row", "unclaimed_now"]


def claimed_now(db: BoardDb) -> ColumnElement[bool]:
    """SQL: the job's lease is live (someone holds it)."""
    return and_(jobs.c.owner.is_not(None), jobs.c.lease_until > db.now_sql)


def unclaimed_now(db: BoardDb) -> ColumnElement[bool]:
    """SQL: nobody holds the job (never claimed, given back, or its lease ran out)."""
    return or_(jobs.c.owner.is_(None), jobs.c.lease_until <= db.now_sql)


def job_from_row(row: Mapping[str, Any] | RowMapping, board: JobBoard) -> Job:
    """The job a `zag_jobs` row (selected with `db_now`, the database's time) holds."""
    data = json.loads(row["data"])
    data.update(
        priority=row["priority"],
        due_at=row["due_at"],
        posted_at=row["posted_at"],
        idempotency_key=row["idempotency_key"],
        schedule=row["schedule"],
        build_failures=row["build_failures"],
    )
    live = row["owner"] is not None and (row["lease_until"] or 0.0) > row["db_now"]
    state = JobState.CLAIMED if live else JobState.UNCLAIMED
    job = Job.from_dict(data, order=row["seq"], version=row["version"], state=state)
    job.board = board
    return job


async def insert_job(
    db: BoardDb, conn: AsyncConnection, job: Job, delay: float | None
) -> Mapping[str, Any] | None:
    """Add `job` (and its idempotency key) in the transaction `conn`; returns its row.

    None when its key or its id is taken already (a concurrent or earlier post):
    the caller reads that job instead. With `delay`, the job is due that many
    seconds after the database's now; with None, `job.due_at` is kept.
    """
    now = db.now_sql
    if job.idempotency_key is not None:
        taken = await conn.execute(
            db.insert(job_keys)
            .values(key=job.idempotency_key, job_uuid=job.uuid)
            .on_conflict_do_nothing(index_elements=[job_keys.c.key])
            .returning(job_keys.c.key)
        )
        if taken.first() is None:
            return None
    due: ColumnElement[float] | float = job.due_at
    if delay is not None:
        due = now + delay if delay > 0 else 0.0
    data = {k: v for k, v in job.to_dict().items() if k in ("uuid", "name", "flow_id", "factory")}
    statement = (
        db.insert(jobs)
        .values(
            uuid=job.uuid,
            name=job.name,
            flow_id=job.flow_id,
            data=json.dumps(data),
            priority=job.priority,
            due_at=due,
            posted_at=now,
            idempotency_key=job.idempotency_key,
            schedule=job.schedule,
            build_failures=job.build_failures,
            version=0,
        )
        .on_conflict_do_nothing(index_elements=[jobs.c.uuid])
        .returning(*jobs.c, now.label("db_now"))
    )
    row = (await conn.execute(statement)).mappings().first()
    return None if row is None else dict(row)
