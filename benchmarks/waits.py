"""Scenario WAITS (S9 waits): flows that wait for a signal or a time, holding nothing meanwhile.

Two deployments: the embedded default (``ZagService`` on a SQLite file: flows, job
board and conductor in one database) and PostgreSQL flows with a ZooKeeper board
(``zookeeper://127.0.0.1:2181/zag-bench/<uuid>``, removed afterwards). Each run uses
its own SQLite file and its own PostgreSQL database (dropped afterwards), so it
cannot disturb another bench session on the same server.

- **signal-to-resume latency**: ``waits_latency_n`` flows started with ``service.start()``
  stop WAITING on ``wait_for(event="approval")``; then, one flow at a time,
  ``await service.signal(...)`` (on ZK+PG also ``zag.signal(..., board=)`` from a
  separate client: its own backend and board connections), until the flow's
  record says SUCCESS. Reported p50/p99: the ``signal`` call, signal -> the atom
  after the wait runs (an in-process mark), and signal -> SUCCESS in the record
  (polled every 0.5 ms once the mark is there).
- **many waiting flows** (``waits_many_n``: 100,000; 2,000 with ``--quick``): engines
  run the flows to WAITING in batches of ``BATCH`` concurrent engines, on a SQLite
  file and on PostgreSQL. Reported: database bytes and rows per waiting flow
  (SQLite file after a WAL checkpoint; ``pg_total_relation_size`` of the zag
  tables, dead tuples included), RSS and live Python objects per waiting flow
  once the engines are gone (nothing is held, so about 0), the time to signal
  all of them (``zag.signal``, ``BATCH`` in flight) and to resume all of them
  (``Engine.load(...).run()``, ``BATCH`` at once).
- **timer lateness**: flows started with ``service.start()`` on
  ``zag.sleep(delay=d)`` and on ``wait_for(timeout=d, default=...)``, woken by the
  board's delayed jobs (the conductor parks a WAITING flow's job until its
  deadline); lateness = wall clock when the atom after the wait runs minus the
  wait's deadline as recorded (the database's clock, on this machine).
  A revision without the board wake (``JobBoard.park``) reports it as missing.

TaskFlow has no durable waits: its column says n/a (``peer_scenario``).

``python benchmarks/waits.py [--quick] [--part latency,many,timers]`` runs the zag
side alone and prints its rows.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import inspect
import os
import sqlite3
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from common import PG_ADMIN, Plan, Recorder, check, clock, drop_pg, fresh_pg

SCENARIO = "WAITS"
NO_PEER = "TaskFlow has no durable waits"
ZK_SERVERS = "127.0.0.1:2181"
ZK_ROOT = "/zag-bench"
#: Engines (or signals) in flight at once in the many-flows part.
BATCH = int(os.environ.get("ZAG_BENCH_WAITS_BATCH", "64"))
LATENCY_FACTORY = "waits:approval_flow"
SLEEP_FACTORY = "waits:sleep_flow"
TIMEOUT_FACTORY = "waits:timeout_flow"
EMBEDDED = "embedded (SQLite file)"
ZKPG = "ZK+PG"

#: key -> (perf_counter, time.time()) when the atom after the wait ran, in this process.
MARKS: dict[str, tuple[float, float]] = {}
#: keys someone waits on (set by the atom after the wait).
WATCH: dict[str, asyncio.Event] = {}


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the flows


def _mark_task() -> Any:
    import zag_async as zag

    @zag.task(name="after")
    async def after(key: str) -> None:
        MARKS[key] = (clock(), time.time())
        event = WATCH.get(key)
        if event is not None:
            event.set()

    return after


def approval_flow() -> Any:
    """Wait for an "approval" signal, then mark."""
    import zag_async as zag

    return zag.linear(
        "approval",
        zag.wait_for("approve", event="approval", provides="approval"),
        _mark_task(),
    )


def sleep_flow(delay: float) -> Any:
    """A durable timer of `delay` seconds, then mark."""
    import zag_async as zag

    return zag.linear("nap", zag.sleep("nap", delay=delay), _mark_task())


def timeout_flow(delay: float) -> Any:
    """Wait for a signal that never comes; the timeout ends it with a default, then mark."""
    import zag_async as zag

    return zag.linear(
        "deadline",
        zag.wait_for(
            "approve", event="approval", timeout=delay, default="late", provides="approval"
        ),
        _mark_task(),
    )


# --------------------------------------------------------------------------- helpers


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), interpolated between the closest ranks."""
    vals = sorted(values)
    if len(vals) == 1:
        return vals[0]
    pos = (len(vals) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(vals) - 1)
    return vals[lo] + (vals[hi] - vals[lo]) * (pos - lo)


def rss_bytes() -> int:
    """Resident set size now (not the peak), from /proc/self/statm."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def until(
    probe: Callable[[], Awaitable[Any]], *, within: float, what: str, every: float = 0.005
) -> Any:
    """Poll `probe` until it returns something truthy; TimeoutError names `what`."""
    try:
        async with asyncio.timeout(within):
            while True:
                got = await probe()
                if got:
                    return got
                await asyncio.sleep(every)
    except TimeoutError:
        raise TimeoutError(f"gave up after {within:g} s waiting for {what}") from None


async def in_batches(
    items: list[Any], fn: Callable[[Any], Awaitable[Any]], size: int, progress: str = ""
) -> None:
    """Await fn(item) for every item, `size` at a time (a pool of `size` workers)."""
    queue = iter(items)
    done = 0
    t0 = last = clock()

    async def worker() -> None:
        nonlocal done, last
        for item in queue:
            await fn(item)
            done += 1
            if progress and clock() - last > 30:
                last = clock()
                log(f"  {progress}: {done}/{len(items)} ({done / (last - t0):.0f}/s)")

    async with asyncio.TaskGroup() as tg:
        for _ in range(min(size, len(items))):
            tg.create_task(worker())


@contextlib.asynccontextmanager
async def pg_database() -> AsyncIterator[str]:
    url = await fresh_pg("waits")
    try:
        yield url
    finally:
        await drop_pg(url)


@contextlib.asynccontextmanager
async def zk_root() -> AsyncIterator[str]:
    """A fresh board URL under /zag-bench, its nodes deleted afterwards."""
    from jobs import remove_root

    root = f"{ZK_ROOT}/waits-{uuid.uuid4().hex[:12]}"
    try:
        yield f"zookeeper://{ZK_SERVERS}{root}"
    finally:
        with contextlib.suppress(Exception):
            await remove_root(root)


def pg_url_of(libpq: str) -> str:
    return libpq.replace("postgresql+asyncpg://", "postgresql://")


async def pg_reachable() -> str | None:
    try:
        import asyncpg

        conn = await asyncpg.connect(PG_ADMIN, timeout=5)
        await conn.close()
    except Exception as exc:
        return f"PostgreSQL at {PG_ADMIN}: {type(exc).__name__}: {exc}"
    return None


async def zk_reachable() -> str | None:
    try:
        from jobs import zk_reachable as reach
    except ImportError as exc:
        return str(exc)
    try:
        why = await reach()
    except ImportError as exc:
        return f"{exc} (the bench session installs zag-async[zookeeper])"
    return f"ZooKeeper at {ZK_SERVERS}: {why}" if why else None


def board_wakes() -> bool:
    """True when this revision's job boards park WAITING jobs and wake them (issue 12)."""
    from zag_async.jobs import JobBoard

    return hasattr(JobBoard, "park") and hasattr(JobBoard, "wake")


def signal_takes_board() -> bool:
    import zag_async as zag

    return "board" in inspect.signature(zag.signal).parameters


# --------------------------------------------------------------------------- latency


async def _waiting(service: Any, flow_ids: list[str], within: float) -> None:
    """Until every flow's record says WAITING."""
    pending = list(flow_ids)

    async def probe() -> bool:
        while pending:
            status = await service.flow_status(pending[-1])
            check(not status.done, f"flow {pending[-1]} ended ({status.state}) before a signal")
            if str(status.state) != "WAITING":
                return False
            pending.pop()
        return True

    await until(probe, within=within, what=f"{len(flow_ids)} flows to be WAITING", every=0.02)


async def latency(
    service: Any, n: int, send: Callable[[str, str], Awaitable[Any]]
) -> dict[str, list[float]]:
    """Start n approval flows, then signal them one by one; seconds per phase and flow."""
    keys = [f"lat-{uuid.uuid4().hex[:8]}-{i}" for i in range(n)]
    ids = [await service.start(LATENCY_FACTORY, store={"key": k}) for k in keys]
    await _waiting(service, ids, within=60 + n * 0.2)
    out: dict[str, list[float]] = {"call": [], "atom": [], "success": []}
    for i, (key, flow_id) in enumerate(zip(keys, ids, strict=True)):
        ran = WATCH[key] = asyncio.Event()
        t0 = clock()
        await send(flow_id, f"sig-{key}")
        t1 = clock()
        try:
            async with asyncio.timeout(30):
                await ran.wait()
        except TimeoutError:
            raise TimeoutError(f"flow {i} ({flow_id}) did not resume within 30 s") from None
        t2 = clock()

        async def ended(fid: str = flow_id) -> Any:
            status = await service.flow_status(fid)
            return status if status.done else None

        status = await until(ended, within=30, what=f"flow {flow_id} to end", every=0.0005)
        t3 = clock()
        check(str(status.state) == "SUCCESS", f"flow {flow_id} ended {status.state}")
        del WATCH[key]
        out["call"].append(t1 - t0)
        out["atom"].append(t2 - t0)
        out["success"].append(t3 - t0)
    return out


def report_latency(rec: Recorder, case: str, r: dict[str, list[float]], note: str) -> None:
    n = len(r["success"])
    for phase, metric in (
        ("success", "signal -> SUCCESS"),
        ("atom", "signal -> next atom runs"),
        ("call", "signal call"),
    ):
        ms = [x * 1e3 for x in r[phase]]
        rec.add(
            SCENARIO,
            case,
            f"{metric} p50",
            "ms",
            [pct(ms, 50)],
            f"N={n} sequential; {note}" if phase == "success" else "",
        )
        rec.add(
            SCENARIO,
            case,
            f"{metric} p99",
            "ms",
            [pct(ms, 99)],
            f"max {max(ms):.1f} ms" if phase == "success" else "",
        )


async def latency_embedded(n: int, workdir: str) -> dict[str, list[float]]:
    from zag_async import ZagService

    url = f"sqlite+aiosqlite:///{workdir}/latency-{time.monotonic_ns()}.db"
    async with ZagService(backend=url) as service:

        async def send(flow_id: str, sid: str) -> Any:
            return await service.signal(flow_id, "approval", "ok", signal_id=sid)

        await latency(service, min(5, n), send)  # warm-up
        return await latency(service, n, send)


async def latency_zkpg(n: int, client: bool) -> dict[str, list[float]]:
    """ZK board + PostgreSQL; `client`: signals from separate connections with board=."""
    import zag_async as zag
    from zag_async import ZagService

    async with pg_database() as pg, zk_root() as board_url:
        await zag.persistence.upgrade(pg)
        # A service's conductor on a ZooKeeper board runs only the service's own jobs by
        # default, and then does not see a wake sent by someone else (the flow waits for
        # the ~10 s sweep): a separate client's signal is for conductors that claim any job.
        async with ZagService(backend=pg, board=board_url, conductor=client) as service:
            if not client:

                async def send(flow_id: str, sid: str) -> Any:
                    return await service.signal(flow_id, "approval", "ok", signal_id=sid)

                await latency(service, min(5, n), send)
                return await latency(service, n, send)
            async with (
                zag.connect(pg) as backend,
                zag.jobs.connect(board_url, backend=backend) as board,
            ):
                signal: Any = zag.signal  # board= is new in issue 12's board wake

                async def send(flow_id: str, sid: str) -> Any:
                    return await signal(
                        flow_id, "approval", "ok", backend=backend, board=board, signal_id=sid
                    )

                await latency(service, min(5, n), send)
                return await latency(service, n, send)


# --------------------------------------------------------------------------- many waiting flows

TABLES = ("zag_logbooks", "zag_flows", "zag_atoms", "zag_signals", "zag_jobs")


def sqlite_bytes(path: str) -> int:
    """The database file's size after a WAL checkpoint (plus what is left in the WAL)."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    wal = Path(path + "-wal")
    return os.path.getsize(path) + (wal.stat().st_size if wal.exists() else 0)


class Sizer:
    """Bytes and rows of the zag tables of one database."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sqlite = url.startswith("sqlite")

    async def bytes(self) -> int:
        if self.sqlite:
            return sqlite_bytes(self.url.split("///", 1)[1])
        import asyncpg

        conn = await asyncpg.connect(pg_url_of(self.url), timeout=5)
        try:
            got = await conn.fetchval(
                "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relname LIKE 'zag%'"
            )
            return int(got)
        finally:
            await conn.close()

    async def rows(self) -> dict[str, int]:
        if self.sqlite:
            path = self.url.split("///", 1)[1]
            with contextlib.closing(sqlite3.connect(path)) as conn:
                return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}
        import asyncpg

        conn = await asyncpg.connect(pg_url_of(self.url), timeout=5)
        try:
            return {t: int(await conn.fetchval(f"SELECT count(*) FROM {t}")) for t in TABLES}
        finally:
            await conn.close()

    async def states(self) -> dict[str, int]:
        sql = "SELECT state, count(*) FROM zag_flows GROUP BY state"
        if self.sqlite:
            path = self.url.split("///", 1)[1]
            with contextlib.closing(sqlite3.connect(path)) as conn:
                return dict(conn.execute(sql).fetchall())
        import asyncpg

        conn = await asyncpg.connect(pg_url_of(self.url), timeout=5)
        try:
            return {r[0]: int(r[1]) for r in await conn.fetch(sql)}
        finally:
            await conn.close()


async def many(url: str, n: int) -> dict[str, Any]:
    """n flows run to WAITING by engines, then signalled and resumed; figures as a dict."""
    import zag_async as zag

    flow = approval_flow()
    logbook = str(uuid.uuid4())
    sizer = Sizer(url)
    out: dict[str, Any] = {"n": n}
    async with zag.connect(url) as backend:
        # Warm-up (imports, statement caches, the connection pool), then an empty baseline.
        warm = zag.Engine(flow, store={"key": "warm"}, backend=backend, logbook=logbook)
        await warm.run()
        await zag.signal(warm.flow_id, "approval", "ok", backend=backend)
        await (await zag.Engine.load(warm.flow_id, backend=backend, flow=flow)).run()
        bytes0, rows0 = await sizer.bytes(), await sizer.rows()
        gc.collect()
        rss0, objs0 = rss_bytes(), len(gc.get_objects())

        ids: list[str] = []

        async def create(i: int) -> None:
            engine = zag.Engine(flow, store={"key": f"m{i}"}, backend=backend, logbook=logbook)
            await engine.run()
            check(engine.state is zag.FlowState.WAITING, f"flow {i} is {engine.state}")
            ids.append(engine.flow_id)

        t = clock()
        await in_batches(list(range(n)), create, BATCH, "waiting")
        out["create_s"] = clock() - t
        gc.collect()
        out["rss_per_flow"] = (rss_bytes() - rss0) / n
        out["objects_per_flow"] = (len(gc.get_objects()) - objs0 - 1) / n  # minus `ids` itself
        out["peak_rss_kib"] = zag_maxrss()
        rows = await sizer.rows()
        out["rows"] = {t_: rows[t_] - rows0[t_] for t_ in TABLES}
        out["bytes_per_flow"] = (await sizer.bytes() - bytes0) / n
        states = await sizer.states()
        check(states.get("WAITING", 0) == n, f"states after creating: {states}")

        async def send(flow_id: str) -> None:
            await zag.signal(flow_id, "approval", "ok", backend=backend)

        t = clock()
        await in_batches(ids, send, BATCH, "signalled")
        out["signal_s"] = clock() - t
        out["bytes_per_flow_signalled"] = (await sizer.bytes() - bytes0) / n

        async def resume(flow_id: str) -> None:
            engine = await zag.Engine.load(flow_id, backend=backend, flow=flow)
            await engine.run()
            check(engine.state is zag.FlowState.SUCCESS, f"flow {flow_id} is {engine.state}")

        t = clock()
        await in_batches(ids, resume, BATCH, "resumed")
        out["resume_s"] = clock() - t
        states = await sizer.states()
        check(states.get("SUCCESS", 0) == n + 1, f"states after resuming: {states}")
    return out


def zag_maxrss() -> int:
    from common import maxrss_kib

    return maxrss_kib()


def report_many(rec: Recorder, case: str, r: dict[str, Any]) -> None:
    n = r["n"]
    rows = r["rows"]
    per = ", ".join(f"{t.removeprefix('zag_')} {v / n:.2f}" for t, v in rows.items() if v)
    rec.add(
        SCENARIO,
        case,
        "DB bytes per waiting flow",
        "B",
        [r["bytes_per_flow"]],
        f"N={n:,}; rows per flow: {per}",
    )
    rec.add(
        SCENARIO,
        case,
        "DB bytes per flow, signal pending",
        "B",
        [r["bytes_per_flow_signalled"]],
        "after all signals stored",
    )
    rec.add(
        SCENARIO,
        case,
        "RSS held per waiting flow",
        "B",
        [r["rss_per_flow"]],
        f"RSS now minus before, engines gone; peak RSS {r['peak_rss_kib'] / 1024:.0f} MiB",
    )
    rec.add(
        SCENARIO,
        case,
        "objects held per waiting flow",
        "",
        [r["objects_per_flow"]],
        "gc.get_objects() delta / N",
    )
    rec.add(
        SCENARIO,
        case,
        "run to WAITING",
        "flows/s",
        [n / r["create_s"]],
        f"{r['create_s']:.1f} s; {BATCH} engines at once",
    )
    rec.add(
        SCENARIO,
        case,
        "signal all",
        "s",
        [r["signal_s"]],
        f"{n / r['signal_s']:,.0f} signals/s, {BATCH} in flight",
    )
    rec.add(
        SCENARIO,
        case,
        "resume all",
        "s",
        [r["resume_s"]],
        f"{n / r['resume_s']:,.0f} flows/s, Engine.load().run(), {BATCH} at once",
    )


# --------------------------------------------------------------------------- timers


async def timers(service: Any, n: int, first: float, spread: float) -> dict[str, list[float]]:
    """n flows (half sleep, half wait_for timeout) due evenly between first and first+spread
    seconds after the first start (each delay counted from its own start)."""
    keys: list[tuple[str, str, str]] = []
    t0 = time.time()
    for i in range(n):
        delay = max(0.05, t0 + first + spread * i / max(1, n - 1) - time.time())
        factory = SLEEP_FACTORY if i % 2 == 0 else TIMEOUT_FACTORY
        key = f"tim-{uuid.uuid4().hex[:8]}-{i}"
        flow_id = await service.start(factory, delay, store={"key": key})
        keys.append((key, flow_id, "sleep" if factory == SLEEP_FACTORY else "timeout"))

    async def all_ended() -> bool:
        for _, flow_id, _ in keys:
            if not (await service.flow_status(flow_id)).done:
                return False
        return True

    await until(all_ended, within=first + spread + 120, what=f"{n} timers to fire", every=0.1)
    out: dict[str, list[float]] = {"sleep": [], "timeout": []}
    for key, flow_id, kind in keys:
        detail = await service.backend.load_flow(flow_id)
        check(str(detail.state) == "SUCCESS", f"timer flow {flow_id} ended {detail.state}")
        wait_atom = "nap" if kind == "sleep" else "approve"
        waited = (detail.atoms[wait_atom].meta or {}).get("waited") or {}
        check(waited.get("ended_by") == "timeout", f"{flow_id}: wait ended {waited}")
        out[kind].append(MARKS[key][1] - waited["deadline"])
    return out


def report_timers(rec: Recorder, case: str, r: dict[str, list[float]], note: str) -> None:
    for kind, metric in (
        ("sleep", "sleep(delay) lateness"),
        ("timeout", "wait_for(timeout) lateness"),
    ):
        ms = [x * 1e3 for x in r[kind]]
        rec.add(SCENARIO, case, f"{metric} p50", "ms", [pct(ms, 50)], f"N={len(ms)}; {note}")
        rec.add(
            SCENARIO,
            case,
            f"{metric} p99",
            "ms",
            [pct(ms, 99)],
            f"min {min(ms):.1f}, max {max(ms):.1f} ms",
        )


async def timers_embedded(n: int, workdir: str, first: float, spread: float) -> Any:
    from zag_async import ZagService

    url = f"sqlite+aiosqlite:///{workdir}/timers-{time.monotonic_ns()}.db"
    async with ZagService(backend=url) as service:
        return await timers(service, n, first, spread)


async def timers_zkpg(n: int, first: float, spread: float) -> Any:
    import zag_async as zag
    from zag_async import ZagService

    async with pg_database() as pg, zk_root() as board_url:
        await zag.persistence.upgrade(pg)
        async with ZagService(backend=pg, board=board_url) as service:
            return await timers(service, n, first, spread)


# --------------------------------------------------------------------------- the scenario


def zag_scenario(
    rec: Recorder, plan: Plan, parts: tuple[str, ...] = ("latency", "many", "timers")
) -> None:
    """The zag side of WAITS (run.py calls it with the zag Recorder)."""
    with tempfile.TemporaryDirectory(prefix="zag-waits-") as workdir:
        _zag_scenario(rec, plan, parts, workdir)


def _attempt(rec: Recorder, case: str, metric: str, unit: str, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        if isinstance(exc, BaseExceptionGroup):  # name what failed inside the task group
            exc = exc.exceptions[0]
        log(f"zag: WAITS {case}: {metric} failed: {type(exc).__name__}: {exc}")
        rec.missing(SCENARIO, case, metric, unit, f"failed: {type(exc).__name__}: {exc}")
        return None


def _zag_scenario(rec: Recorder, plan: Plan, parts: tuple[str, ...], workdir: str) -> None:
    pg_why = asyncio.run(pg_reachable())
    zk_why = asyncio.run(zk_reachable())
    zkpg_why = pg_why or zk_why
    wakes = board_wakes()
    sep_note = (
        "separate client (own backend + board) zag.signal(board=); service conductor=True"
        if signal_takes_board()
        else ""
    )

    if "latency" in parts:
        n = plan.waits_latency_n
        via = "the board wakes the job" if wakes else "the service resumes it (no board wake)"
        log(f"zag: WAITS latency, {EMBEDDED}, N={n}")
        r = _attempt(
            rec,
            EMBEDDED,
            "signal -> SUCCESS p50",
            "ms",
            lambda: asyncio.run(latency_embedded(n, workdir)),
        )
        if r:
            report_latency(rec, EMBEDDED, r, f"service.signal; {via}")
        if zkpg_why:
            rec.missing(SCENARIO, ZKPG, "signal -> SUCCESS p50", "ms", f"skipped: {zkpg_why}")
        else:
            log(f"zag: WAITS latency, {ZKPG}, N={n}")
            r = _attempt(
                rec,
                ZKPG,
                "signal -> SUCCESS p50",
                "ms",
                lambda: asyncio.run(latency_zkpg(n, client=False)),
            )
            if r:
                report_latency(rec, ZKPG, r, f"service.signal; {via}")
            case = f"{ZKPG}, separate client"  # the service's conductor claims any job
            if sep_note:
                log(f"zag: WAITS latency, {case}, N={n}")
                r = _attempt(
                    rec,
                    case,
                    "signal -> SUCCESS p50",
                    "ms",
                    lambda: asyncio.run(latency_zkpg(n, client=True)),
                )
                if r:
                    report_latency(rec, case, r, sep_note)
            else:
                rec.missing(
                    SCENARIO,
                    case,
                    "signal -> SUCCESS p50",
                    "ms",
                    "skipped: zag.signal takes no board= in this revision",
                )

    n = plan.waits_many_n
    if "many" in parts or "many:sqlite" in parts:
        case = f"SQLite file, {n:,} waiting"
        log(f"zag: WAITS many waiting flows, {case}")
        url = f"sqlite+aiosqlite:///{workdir}/many-{time.monotonic_ns()}.db"
        r = _attempt(rec, case, "DB bytes per waiting flow", "B", lambda: asyncio.run(many(url, n)))
        if r:
            report_many(rec, case, r)
    if "many" in parts or "many:postgres" in parts:
        case = f"PostgreSQL, {n:,} waiting"
        if pg_why:
            rec.missing(SCENARIO, case, "DB bytes per waiting flow", "B", f"skipped: {pg_why}")
        else:
            log(f"zag: WAITS many waiting flows, {case}")

            async def on_pg() -> Any:
                import zag_async as zag

                async with pg_database() as pg:
                    await zag.persistence.upgrade(pg)
                    return await many(pg, n)

            r = _attempt(rec, case, "DB bytes per waiting flow", "B", lambda: asyncio.run(on_pg()))
            if r:
                report_many(rec, case, r)

    if "timers" in parts:
        n, first, spread = plan.waits_timer_n, plan.waits_timer_first, plan.waits_timer_spread
        cases = [
            (EMBEDDED, lambda: timers_embedded(n, workdir, first, spread), None),
            (ZKPG, lambda: timers_zkpg(n, first, spread), zkpg_why),
        ]
        note = (
            f"deadlines evenly {first:g}-{first + spread:g} s after the first start; "
            "one conductor, max_jobs=1"
        )
        for case, make, why in cases:
            if not wakes:
                rec.missing(
                    SCENARIO,
                    case,
                    "sleep(delay) lateness p50",
                    "ms",
                    "skipped: this revision's boards do not park and wake waiting jobs",
                )
                continue
            if why:
                rec.missing(SCENARIO, case, "sleep(delay) lateness p50", "ms", f"skipped: {why}")
                continue
            log(f"zag: WAITS timer lateness, {case}, N={n}")
            r = _attempt(
                rec, case, "sleep(delay) lateness p50", "ms", lambda m=make: asyncio.run(m())
            )
            if r:
                report_timers(rec, case, r, note)


PEER_ROWS = (
    (EMBEDDED, "signal -> SUCCESS p50", "ms"),
    (ZKPG, "signal -> SUCCESS p50", "ms"),
    ("SQLite file", "DB bytes per waiting flow", "B"),
    ("PostgreSQL", "DB bytes per waiting flow", "B"),
    (EMBEDDED, "sleep(delay) lateness p50", "ms"),
    (ZKPG, "sleep(delay) lateness p50", "ms"),
)


def peer_scenario(rec: Recorder, plan: Plan) -> None:
    """The TaskFlow side of WAITS: nothing to run, shown as n/a beside zag's main figures."""
    n = plan.waits_many_n
    for case, metric, unit in PEER_ROWS:
        if case in ("SQLite file", "PostgreSQL"):
            case = f"{case}, {n:,} waiting"
        rec.missing(SCENARIO, case, metric, unit, NO_PEER)


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--part",
        default="latency,many,timers",
        help="of latency, many (or many:sqlite, many:postgres), timers",
    )
    parser.add_argument("--many-n", type=int, default=None)
    parser.add_argument("--latency-n", type=int, default=None)
    parser.add_argument("--timer-n", type=int, default=None)
    parser.add_argument("--timer-first", type=float, default=None)
    parser.add_argument("--timer-spread", type=float, default=None)
    args = parser.parse_args(argv)
    import dataclasses

    plan = Plan.quick() if args.quick else Plan()
    given = (
        ("waits_many_n", args.many_n),
        ("waits_latency_n", args.latency_n),
        ("waits_timer_n", args.timer_n),
        ("waits_timer_first", args.timer_first),
        ("waits_timer_spread", args.timer_spread),
    )
    changes = {k: v for k, v in given if v is not None}
    plan = dataclasses.replace(plan, **changes)
    rec = Recorder("zag")
    zag_scenario(rec, plan, tuple(p.strip() for p in args.part.split(",") if p.strip()))
    for m in rec.rows:
        value = "n/a" if m.stats is None else f"{m.stats.median:,.3f}"
        print(f"{m.case:<34} {m.metric:<36} {value:>12} {m.unit:<8} {m.note}")
    return 1 if any(m.stats is None for m in rec.rows) else 0


if __name__ == "__main__":
    # The flows' factories import this file as `waits`: run that module, not a
    # second copy named __main__, so they share MARKS and WATCH.
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import waits

    sys.exit(waits.main())
