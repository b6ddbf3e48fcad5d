"""Scenario S8, many flows at once: N concurrent three-atom flows in one process.

N engines, each running the same three-atom linear flow of no-op ``async def``
tasks, are started together under one ``asyncio.TaskGroup`` in one event loop,
in memory, on a SQLite file and on PostgreSQL (a fresh database per run, dropped
afterwards, as waits.py does). For each N (``s8_sizes``: 100, 1,000, 10,000;
100 and 1,000 with ``--quick``) it reports:

- flows/s and atoms/s (wall time from building the first engine to the last
  flow's end), and per-flow cost (that wall time / N, in us);
- one serial flow's atoms/s on the same backend (the issue's "10x a serial flow"
  target), measured just before;
- commits per atom: on PostgreSQL the ``xact_commit`` delta of the database from
  ``pg_stat_database`` (every session's own start-up transaction subtracted, the
  backend closed so its counts are flushed) divided by 3N; on SQLite the COMMITs
  SQLAlchemy issued (an upper bound; see accounting.py), when the backend goes
  through SQLAlchemy; PostgreSQL sessions opened in the window;
- peak RSS growth per flow: ``ru_maxrss`` after minus before, divided by N (the
  process high-water mark: sizes run in ascending order, so each larger size
  raises it; a size whose peak stays under an earlier one reports 0).

TaskFlow is not run: see ``NO_PEER``.

``python benchmarks/many.py [--quick] [--sizes 100,1000] [--backends memory,sqlite,postgres]``
runs the zag side alone and prints its rows.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import logging
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from common import PG_ADMIN, Plan, Recorder, check, clock, drop_pg, fresh_pg, maxrss_kib

SCENARIO = "S8"
ATOMS = 3
SERIAL_FLOWS = 20
NO_PEER = (
    "not run: TaskFlow runs concurrent flows only as one engine per thread; at its "
    "S1 cost (2-15 ms per task) 1,000-10,000 flows take minutes, and it is not "
    "installed outside the nox bench session"
)
BACKENDS = ("memory", "sqlite", "postgres")


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def three_atom_flow() -> Any:
    """a -> b -> c, each a no-op ``async def`` returning a small int."""
    import zag_async as zag

    @zag.task(name="a", provides="x")
    async def a() -> int:
        return 1

    @zag.task(name="b", provides="y")
    async def b(x: int) -> int:
        return x + 1

    @zag.task(name="c", provides="z")
    async def c(y: int) -> int:
        return y + 1

    return zag.linear("s8", a, b, c)


class LeaseLog(logging.Filter):
    """Counts (and keeps off stderr) the engine's per-flow lease warnings.

    With thousands of flows on one database, a flow's lease heartbeat can miss its beat:
    each miss is one warning per flow; the counts are a figure of this scenario.
    """

    KINDS = (
        ("could not renew its lease", "lease renewals missed"),
        ("its lease was taken over", "leases taken over"),
    )

    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        for needle, kind in self.KINDS:
            if needle in text:
                self.counts[kind] += 1
                return False
        return True


LEASES = LeaseLog()
logging.getLogger("zag_async").addFilter(LEASES)


# --------------------------------------------------------------------------- PostgreSQL


async def pg_counters(url: str, idle_timeout: float = 15.0) -> tuple[int, int]:
    """(xact_commit, sessions) of the database once none of its sessions is left.

    A backend flushes its counts when it exits, so waiting for the database to be
    idle makes the figures complete (see accounting.py). Read from another database.
    """
    import asyncpg

    name = url.rsplit("/", 1)[1]
    conn = await asyncpg.connect(PG_ADMIN, timeout=5)
    try:
        deadline = time.monotonic() + idle_timeout
        while await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE datname = $1", name):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.005)
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        row = await conn.fetchrow(
            "SELECT xact_commit, sessions FROM pg_stat_database WHERE datname = $1", name
        )
        return int(row[0]), int(row[1])
    finally:
        await conn.close()


# --------------------------------------------------------------------------- one size


async def serial(url: str | None, flows: int) -> float:
    """Atoms per second of one flow at a time (backend opened outside the timing)."""
    import zag_async as zag

    flow = three_atom_flow()

    async def go(backend: Any) -> float:
        t0 = clock()
        for _ in range(flows):
            engine = zag.Engine(flow, backend=backend)
            result = await engine.run()
            check(result["z"] == 3, f"S8 serial: z = {result['z']}")
        return flows * ATOMS / (clock() - t0)

    if url is None:
        return await go(None)
    async with zag.connect(url) as backend:
        return await go(backend)


async def concurrent(url: str | None, n: int) -> dict[str, Any]:
    """n engines started at once under one task group; figures as a dict."""
    import zag_async as zag

    flow = three_atom_flow()
    out: dict[str, Any] = {}
    sa0 = _sa_commits(url)
    LEASES.counts.clear()

    async def go(backend: Any) -> None:
        engines: list[Any] = []
        errors: list[BaseException] = []

        async def one(engine: Any) -> None:
            # A failed flow must not cancel the others: count it, report the first error.
            try:
                await engine.run()
            except Exception as exc:
                errors.append(exc)

        gc.collect()
        rss0 = maxrss_kib()
        t0 = clock()
        async with asyncio.TaskGroup() as tg:
            for _ in range(n):
                engine = zag.Engine(flow, backend=backend)
                engines.append(engine)
                tg.create_task(one(engine))
        wall = clock() - t0
        out["rss_kib"] = maxrss_kib() - rss0
        out["wall_s"] = wall
        out["failed"] = len(errors)
        if errors:
            out["first_error"] = f"{type(errors[0]).__name__}: {errors[0]}"[:300]
            return
        bad = [e.state for e in engines if e.state is not zag.FlowState.SUCCESS]
        check(not bad, f"S8: {len(bad)} of {n} flows did not succeed: {bad[:3]}")

    if url is None:
        await go(None)
    else:
        async with zag.connect(url) as backend:
            commits0 = getattr(backend, "commits", None)
            await go(backend)
            if commits0 is not None:
                out["backend_commits"] = backend.commits - commits0
    out["sa_commits"] = _sa_commits(url) - sa0
    for _, kind in LeaseLog.KINDS:
        out[kind] = LEASES.counts[kind]
    return out


def _sa_commits(url: str | None) -> int:
    if url is None:
        return 0
    from accounting import CommitCounter

    return CommitCounter.get(url)


async def run_backend(kind: str, sizes: tuple[int, ...], workdir: str) -> list[dict[str, Any]]:
    """Every size on one backend kind, each in its own database (file or PG database)."""
    import zag_async as zag

    results: list[dict[str, Any]] = []
    # Warm-up in memory: imports, the flow compiler.
    await serial(None, 5)
    for n in sizes:
        url: str | None = None
        if kind == "sqlite":
            url = f"sqlite+aiosqlite:///{workdir}/s8-{n}-{time.monotonic_ns()}.db"
        elif kind == "postgres":
            url = await fresh_pg("s8")
        try:
            if url is not None:
                await zag.persistence.upgrade(url)
            serial_aps = await serial(url, SERIAL_FLOWS)
            await concurrent(url, min(n, 50))  # warm-up: pool, statement caches
            before = await pg_counters(url) if kind == "postgres" else None
            r: dict[str, Any] = dict(await concurrent(url, n))
            if before is not None and url is not None:
                after = await pg_counters(url)
                r["pg_sessions"] = after[1] - before[1]
                r["pg_commits"] = (after[0] - before[0]) - r["pg_sessions"]
            r["n"] = n
            r["serial_aps"] = serial_aps
            results.append(r)
        finally:
            if kind == "postgres" and url is not None:
                await drop_pg(url)
    return results


def report(rec: Recorder, kind: str, r: dict[str, Any]) -> None:
    n = r["n"]
    case = f"{kind}, N={n:,}"
    wall = r["wall_s"]
    if r["failed"]:
        rec.missing(
            SCENARIO,
            case,
            "per flow",
            "µs",
            f"{r['failed']:,} of {n:,} flows failed after {wall:.1f} s; first: {r['first_error']}",
        )
        rec.add(SCENARIO, case, "flows failed", "", [r["failed"]])
    atoms = n * ATOMS
    aps = atoms / wall
    if not r["failed"]:
        _report_ok(rec, case, r, wall, atoms, aps)
    _report_counts(rec, kind, case, r, atoms)


def _report_ok(
    rec: Recorder, case: str, r: dict[str, Any], wall: float, atoms: int, aps: float
) -> None:
    n = r["n"]
    rec.add(
        SCENARIO,
        case,
        "per flow",
        "µs",
        [wall / n * 1e6],
        f"{wall:.2f} s wall for {n:,} concurrent 3-atom flows",
    )
    rec.add(SCENARIO, case, "flows/s", "flows/s", [n / wall])
    rec.add(
        SCENARIO,
        case,
        "atoms/s",
        "atoms/s",
        [aps],
        f"one serial flow: {r['serial_aps']:,.0f} atoms/s ({aps / r['serial_aps']:.1f}x)",
    )


def _report_counts(rec: Recorder, kind: str, case: str, r: dict[str, Any], atoms: int) -> None:
    n = r["n"]
    if "pg_commits" in r:
        rec.add(
            SCENARIO,
            case,
            "commits per atom (pg_stat)",
            "xact",
            [r["pg_commits"] / atoms],
            f"xact_commit delta {r['pg_commits']:,} net of {r['pg_sessions']} session "
            "start-ups; target <= 0.2 at N=1,000",
        )
        rec.add(SCENARIO, case, "PostgreSQL sessions opened", "", [r["pg_sessions"]])
    if kind == "sqlite" and "backend_commits" in r:
        rec.add(
            SCENARIO,
            case,
            "commits per atom",
            "xact",
            [r["backend_commits"] / atoms],
            f"{r['backend_commits']:,} write transactions counted by the backend; "
            "target <= 0.2 at N=1,000",
        )
    if kind == "sqlite" and r["sa_commits"]:
        rec.add(
            SCENARIO,
            case,
            "SQLAlchemy COMMITs per atom",
            "xact",
            [r["sa_commits"] / atoms],
            "upper bound: read-only transactions included",
        )
    for _, label in LeaseLog.KINDS:
        if r.get(label):
            rec.add(
                SCENARIO,
                case,
                label,
                "",
                [r[label]],
                "engine warnings (one per flow per missed beat), kept off stderr",
            )
    rec.add(
        SCENARIO,
        case,
        "peak RSS growth per flow",
        "B",
        [r["rss_kib"] * 1024 / n],
        f"ru_maxrss delta {r['rss_kib'] / 1024:.1f} MiB (0: under an earlier peak)",
    )


# --------------------------------------------------------------------------- the scenario


def zag_scenario(rec: Recorder, plan: Plan, backends: tuple[str, ...] = BACKENDS) -> None:
    """The zag side of S8 (run.py calls it with the zag Recorder)."""
    try:
        from accounting import CommitCounter

        CommitCounter.install()
    except ImportError:
        pass
    with tempfile.TemporaryDirectory(prefix="zag-s8-") as workdir:
        for kind in backends:
            log(f"zag: S8 {kind}, N={', '.join(map(str, plan.s8_sizes))}")
            try:
                results = asyncio.run(run_backend(kind, plan.s8_sizes, workdir))
            except Exception as exc:
                traceback.print_exc(file=sys.stderr)
                if isinstance(exc, BaseExceptionGroup):
                    exc = exc.exceptions[0]
                rec.missing(
                    SCENARIO, f"{kind}", "per flow", "µs", f"failed: {type(exc).__name__}: {exc}"
                )
                continue
            for r in results:
                report(rec, kind, r)


def peer_scenario(rec: Recorder, plan: Plan) -> None:
    """The TaskFlow side of S8: n/a beside zag's per-flow figure, with the reason."""
    for kind in BACKENDS:
        for n in plan.s8_sizes:
            rec.missing(SCENARIO, f"{kind}, N={n:,}", "per flow", "µs", NO_PEER)


def main(argv: list[str] | None = None) -> int:
    import dataclasses

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sizes", default=None, help="comma-separated N, e.g. 100,1000")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    args = parser.parse_args(argv)
    plan = Plan.quick() if args.quick else Plan()
    if args.sizes:
        plan = dataclasses.replace(
            plan, s8_sizes=tuple(int(s) for s in args.sizes.split(",") if s.strip())
        )
    rec = Recorder("zag")
    zag_scenario(rec, plan, tuple(b.strip() for b in args.backends.split(",") if b.strip()))
    for m in rec.rows:
        value = "n/a" if m.stats is None else f"{m.stats.median:,.3f}"
        print(f"{m.case:<22} {m.metric:<30} {value:>14} {m.unit:<8} {m.note}")
    return 1 if any(m.stats is None for m in rec.rows) else 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
