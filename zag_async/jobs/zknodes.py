"""How a ZooKeeper job board lays its data out in nodes, and how they are encoded.

The board, its job cache and its lock queues all name the same nodes and read
the same JSON; this module is that shared vocabulary, so the layout is written
down once. Layout under the board's path:

    jobs/<uuid>        a posted job (JSON); its creation time is the post time
    claims/<uuid>      ephemeral: who holds the job; its czxid is the fencing token
    keys/<key>         idempotency key -> job uuid (kept after the job completes)
    results/<uuid>     how a finished job ended (what `job.wait()` returns)
    trash/<uuid>       jobs that could not run, with the reason
    schedules/<name>   cron schedules
    locks/<name>/      distributed lock queues
    clock              touched to read ZooKeeper's clock
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

from aiozk import exc as zk_exc
from aiozk import protocol
from aiozk.transaction import Transaction

from .records import Job
from .schedule import Schedule
from .zksession import ZkSession

__all__ = [
    "DIRS",
    "EV",
    "ScheduleOps",
    "ZkClock",
    "decode_job",
    "dumps",
    "failed",
    "key_node",
    "load_schedules",
    "loads",
    "multi",
    "read_result",
]

#: The board's top-level nodes, created when a board opens.
DIRS = ("jobs", "claims", "keys", "results", "trash", "schedules", "locks", "wakes")
EV = protocol.WatchEvent


def dumps(data: Any) -> bytes:
    """A node's payload: compact JSON."""
    return json.dumps(data, separators=(",", ":")).encode()


def loads(raw: bytes | None) -> Any:
    """A node's payload decoded (None for an empty node)."""
    return json.loads(raw) if raw else None


def key_node(key: str) -> str:
    """The node of an idempotency key, relative to the board's root."""
    # Keys may hold '/' (schedule keys do not, user keys might): keep one path segment.
    return "keys/" + key.replace("%", "%25").replace("/", "%2F")


def decode_job(raw: bytes, stat: Any) -> Job:
    """A job read from its node: posting order, version and post time come from `stat`."""
    data = loads(raw)
    job = Job.from_dict(data, order=stat.created_zxid, version=stat.version)
    job.posted_at = stat.created / 1000.0
    if "delay" in data:
        job.due_at = job.posted_at + float(data["delay"]) if data["delay"] > 0 else 0.0
    return job


class ZkClock:
    """ZooKeeper's clock: read by touching the clock node, estimated in between."""

    def __init__(self, zk: ZkSession) -> None:
        self.zk = zk
        #: ZooKeeper clock - local clock, from the latest write we saw
        self.offset = 0.0

    async def now(self) -> float:
        """ZooKeeper's clock: the modification time of a node we touch now."""
        zk = self.zk
        try:
            stat = await zk.call(zk.c.set, "/clock", b"", -1)
        except zk_exc.NoNode:
            with contextlib.suppress(zk_exc.NodeExists):
                await zk.call(zk.c.create, "/clock", b"")
            stat = await zk.call(zk.c.set, "/clock", b"", -1)
        server = float(stat.modified) / 1000.0
        self.observe(server)
        return server

    def observe(self, server: float) -> None:
        """Note ZooKeeper's time `server`, just read from a node we wrote."""
        self.offset = server - time.time()

    def estimate(self) -> float:
        """ZooKeeper's clock estimated without a round trip (from the last one seen)."""
        return time.time() + self.offset


async def multi(zk: ZkSession, build: Callable[[Transaction], None]) -> list[Any]:
    """Send the operations `build` adds as one transaction; returns its responses."""
    tx = Transaction(zk.c)
    build(tx)
    response = await zk.call(zk.c.send, tx.request)
    return list(response.responses)


def failed(responses: list[Any]) -> bool:
    """A multi that failed answers with error objects instead of results."""
    return any(
        isinstance(r, zk_exc.ZKError) or (isinstance(r, type) and issubclass(r, zk_exc.ZKError))
        for r in responses
    )


async def read_result(zk: ZkSession, job_id: str) -> dict[str, Any] | None:
    """The record a finished job left (its outcome and the job), if any."""
    try:
        raw, _ = await zk.call(zk.c.get, f"/results/{job_id}")
    except zk_exc.NoNode:
        return None
    data = loads(raw)
    return data if isinstance(data, dict) else None


async def load_schedules(zk: ZkSession) -> dict[str, Schedule]:
    """Every schedule stored on the board, by name."""
    names = await zk.call(zk.c.get_children, "/schedules")
    out = {}
    for name in names:
        try:
            raw, _ = await zk.call(zk.c.get, f"/schedules/{name}")
        except zk_exc.NoNode:
            continue
        schedule = Schedule.from_dict(loads(raw))
        out[schedule.name] = schedule
    return out


class ScheduleOps:
    """The operations of one schedule replacement, as one multi."""

    def __init__(
        self,
        removed: list[str],
        pending: list[str],
        changed: dict[str, Schedule],
        existing: set[str],
    ) -> None:
        self.removed, self.pending, self.changed, self.existing = (
            removed,
            pending,
            changed,
            existing,
        )

    def build(self, tx: Transaction) -> None:
        for name in self.removed:
            tx.delete(f"/schedules/{name}", -1)
        for job_id in self.pending:
            tx.delete(f"/jobs/{job_id}", -1)
        for name, schedule in self.changed.items():
            if name in self.existing:
                tx.set_data(f"/schedules/{name}", dumps(schedule.to_dict()), -1)
            else:
                tx.create(f"/schedules/{name}", dumps(schedule.to_dict()))
