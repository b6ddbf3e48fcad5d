"""The operations UI's queries on a flow database of 100,000 flows (issue 16).

A page of the UI must load in under 200 ms with 100,000 flows stored, so each
query it makes should take well under 100 ms. This fills a memory:// store, a
scratch SQLite file and a scratch PostgreSQL database (dropped afterwards) with
N flows inserted in bulk (states, names and creation times varied: 30 days of history, about 1 in 7
flows ended badly) and times, through the `Backend` API (rows turned into
summaries included), the median of 5 runs after one warm-up:

- the first page, newest first (51 rows: a page of 50 and "is there more");
- page 200 through the keyset cursor (`before=`), and, for comparison, what the
  UI did before: read (page + 1) * 50 rows and slice;
- a name filter that matches often ("sync"), one that matches nothing, and one
  that matches the oldest flow alone (the worst cases: every flow is looked at);
- a state filter, on states of 70%, 8% and 1% of the flows (FAILURE also from
  page 200's cursor);
- `count_flows()` over everything and over the last 24 h;
- `failures_over_time` over the last 24 h in 1 h buckets.

PostgreSQL is ANALYZEd after the load (autovacuum would do it within a minute);
SQLite is not (zag never runs ANALYZE on a user's file). Nothing asserts a timing.

    python benchmarks/ui_listing.py [--flows 100000] [--backends memory,sqlite,postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from common import drop_pg, fresh_pg

from zag_async.persistence.names import FLOW_COLUMNS

HERE = Path(__file__).resolve().parent
REPEATS = 5
PAGE = 50
DAY = 86_400.0

#: (state, share of the flows)
STATES = [
    ("SUCCESS", 0.70),
    ("FAILURE", 0.08),
    ("REVERTED", 0.04),
    ("RUNNING", 0.05),
    ("WAITING", 0.05),
    ("PENDING", 0.03),
    ("SUSPENDED", 0.02),
    ("UNCOMPENSATED", 0.02),
    ("STUCK_PAST_PIVOT", 0.01),
]
NAMES = [
    *(f"order-sync-{k}" for k in range(10)),
    *(f"billing_run_{k}" for k in range(10)),
    *(f"email-digest-{k}" for k in range(10)),
    *(f"Inventory Rebuild {k}" for k in range(10)),
    *(f"tenant-export-{k}" for k in range(10)),
]
#: The name of the oldest flow alone: finding it walks every flow.
RARE = "rare-audit-flow"
#: The flow row as the backends write it (its lease left out: none is held).
COLUMNS = ("uuid", *FLOW_COLUMNS)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def rows(n: int, now: float, seed: int = 16) -> list[tuple[Any, ...]]:
    """N flow rows: 30 days of creation times (some equal), varied states and names."""
    rnd = random.Random(seed)
    states = rnd.choices([s for s, _ in STATES], [w for _, w in STATES], k=n)
    books = [str(uuid.UUID(int=rnd.getrandbits(128))) for _ in range(5)]
    out = []
    for i in range(n):
        created = round(now - rnd.random() * 30 * DAY, 3)  # ms resolution: ties happen
        out.append(
            (
                str(uuid.UUID(int=rnd.getrandbits(128), version=4)),
                books[i % len(books)],
                rnd.choice(NAMES),
                states[i],
                None,
                "{}",
                "{}",
                created,
                created + rnd.random() * 600.0,
                3,
            )
        )
    oldest = min(range(n), key=lambda i: out[i][7])
    out[oldest] = (*out[oldest][:2], RARE, *out[oldest][3:])  # one flow: a worst case
    return out


async def fill_sqlite(url: str, data: list[tuple[Any, ...]]) -> None:
    import sqlite3

    import zag_async as zag
    from zag_async.persistence.sqlite import sqlite_path

    async with zag.connect(url):  # the schema
        pass
    conn = sqlite3.connect(sqlite_path(url), isolation_level=None)
    try:
        conn.execute("BEGIN")
        marks = ", ".join("?" * len(COLUMNS))
        conn.executemany(f"INSERT INTO zag_flows ({', '.join(COLUMNS)}) VALUES ({marks})", data)
        conn.execute("COMMIT")
    finally:
        conn.close()


async def fill_postgres(url: str, data: list[tuple[Any, ...]]) -> None:
    import asyncpg

    import zag_async as zag

    async with zag.connect(url):  # the schema
        pass
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.copy_records_to_table("zag_flows", records=data, columns=list(COLUMNS))
        await conn.execute("VACUUM ANALYZE zag_flows")
    finally:
        await conn.close()


async def timed(call: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    """Median milliseconds of REPEATS calls (after one warm-up), and the last result."""
    result = await call()
    took = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        result = await call()
        took.append((time.perf_counter() - started) * 1e3)
    return statistics.median(took), result


async def measure(url: str, now: float) -> list[tuple[str, float, str]]:
    """(query, median ms, what came back) for each of the UI's queries."""
    import zag_async as zag

    F = zag.FlowState
    out: list[tuple[str, float, str]] = []
    async with zag.connect(url) as db:
        # Where page 200 starts: the cursor the UI would hold (found untimed).
        head = await db.list_flows(newest_first=True, limit=199 * PAGE)
        cursor = (head[-1].created_at, head[-1].uuid)
        cases: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
            ("first page, newest first", lambda: db.list_flows(newest_first=True, limit=PAGE + 1)),
            (
                "page 200 by keyset cursor",
                lambda: db.list_flows(newest_first=True, limit=PAGE + 1, before=cursor),
            ),
            (
                "page 200, FAILURE, by keyset cursor",
                lambda: db.list_flows(
                    newest_first=True, limit=PAGE + 1, states=[F.FAILURE], before=cursor
                ),
            ),
            (
                "page 200 the old way (10,001 rows)",
                lambda: db.list_flows(newest_first=True, limit=200 * PAGE + 1),
            ),
            (
                "name filter 'sync' (common)",
                lambda: db.list_flows(newest_first=True, limit=PAGE + 1, name_contains="sync"),
            ),
            (
                "name filter, no match (every row)",
                lambda: db.list_flows(newest_first=True, limit=PAGE + 1, name_contains="nomatch"),
            ),
            (
                "name filter, the oldest flow only",
                lambda: db.list_flows(newest_first=True, limit=PAGE + 1, name_contains="AUDIT"),
            ),
            (
                "state filter FAILURE (8%)",
                lambda: db.list_flows(newest_first=True, limit=PAGE + 1, states=[F.FAILURE]),
            ),
            (
                "state filter SUCCESS (70%)",
                lambda: db.list_flows(newest_first=True, limit=PAGE + 1, states=[F.SUCCESS]),
            ),
            (
                "state filter STUCK_PAST_PIVOT (1%)",
                lambda: db.list_flows(
                    newest_first=True, limit=PAGE + 1, states=[F.STUCK_PAST_PIVOT]
                ),
            ),
            ("count_flows()", lambda: db.count_flows()),
            ("count_flows(last 24 h)", lambda: db.count_flows(created_after=now - DAY)),
            (
                "failures_over_time(24 h, 1 h)",
                lambda: db.failures_over_time(since=now - DAY, bucket=3600.0),
            ),
        ]
        for name, call in cases:
            ms, result = await timed(call)
            if isinstance(result, list) and result and isinstance(result[0], tuple):
                shown = f"{len(result)} buckets, {sum(n for _, n in result)} flows"
            elif isinstance(result, dict):
                shown = f"{sum(result.values())} flows in {len(result)} states"
            else:
                shown = f"{len(result)} rows"
            out.append((name, ms, shown))
    return out


def fill_memory(url: str, data: list[tuple[Any, ...]]) -> None:
    """Rows put straight into the named store (what `save` would have stored)."""
    from zag_async.persistence.memory import MemoryBackend

    tables = MemoryBackend(url)._t
    for values in data:
        tables.flows[values[0]] = {**dict(zip(COLUMNS, values, strict=True)), "lease_owner": None}
    tables.created = sorted((values[7], values[0]) for values in data)
    tables.names = dict(collections.Counter(values[2] for values in data))


async def run(kind: str, n: int, workdir: Path) -> list[tuple[str, float, str]]:
    now = time.time()
    data = rows(n, now)
    if kind == "memory":
        url = f"memory://ui-bench-{uuid.uuid4().hex[:6]}"
        fill_memory(url, data)
        return await measure(url, now)
    if kind == "sqlite":
        url = f"sqlite+aiosqlite:///{workdir / 'ui.db'}"
        started = time.perf_counter()
        await fill_sqlite(url, data)
        log(f"sqlite: {n} flows inserted in {time.perf_counter() - started:.1f} s")
        return await measure(url, now)
    url = await fresh_pg("ui")
    try:
        started = time.perf_counter()
        await fill_postgres(url, data)
        log(f"postgres: {n} flows inserted in {time.perf_counter() - started:.1f} s")
        return await measure(url, now)
    finally:
        await drop_pg(url)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--flows", type=int, default=100_000)
    parser.add_argument("--backends", default="memory,sqlite,postgres")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.backends.split(","):
            log(f"{kind}: filling {args.flows} flows")
            results = asyncio.run(run(kind, args.flows, Path(tmp)))
            print(f"\n{kind}, {args.flows:,} flows (median of {REPEATS}, ms)")
            for name, ms, shown in results:
                print(f"  {name:38} {ms:8.2f}   {shown}")


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
