"""Scenarios S1-S6 implemented with zag-async.

``zag_async`` is imported lazily so the TaskFlow side runs on its own
(``run.py --only-peer``). Every scenario runs inside one event loop owned by an
:class:`asyncio.Runner`; each measured run times its own phases inside the loop.

Only the public API is used (``zag.Engine`` and what ``run()`` returns,
``zag.linear``/``unordered``/``graph``, ``zag.persistence.connect`` and the
backend's records): ``run.py --baseline REV`` runs this same file against an
older revision of the package, whose internals may differ.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any

from common import Phases, Plan, Recorder, Stats, check, clock, measure

_RUNNER: asyncio.Runner | None = None


def _loop_run(factory: Callable[[], Coroutine[Any, Any, Phases]]) -> Callable[[], Phases]:
    """Adapt an async run to the synchronous harness, reusing one event loop."""
    global _RUNNER
    if _RUNNER is None:
        _RUNNER = asyncio.Runner()

    def run_once() -> Phases:
        assert _RUNNER is not None
        return _RUNNER.run(factory())

    return run_once


def close() -> None:
    global _RUNNER
    if _RUNNER is not None:
        _RUNNER.close()
        _RUNNER = None


def version() -> str:
    from common import dist_version

    return dist_version("zag-async")


async def _run(engine: Any) -> Mapping[str, Any]:
    """Run the engine; its result is every provided value by name."""
    result: Awaitable[Mapping[str, Any]] = engine.run()
    return await result


# --------------------------------------------------------------------------- tasks


def _task_classes() -> dict[str, type]:
    import zag_async as zag

    class Step(zag.Task):
        async def execute(self, x: int) -> int:
            return x + 1

    class RevertibleStep(zag.Task):
        reverted: list[str]

        async def execute(self, x: int) -> int:
            return x + 1

        async def revert(self, x: int, **kwargs: Any) -> None:
            self.reverted.append(self.name)

    class Boom(zag.Task):
        raised_at: list[float]

        async def execute(self, x: int) -> int:
            self.raised_at.append(clock())
            raise RuntimeError("t200 fails on purpose")

    class Sleeper(zag.Task):
        async def execute(self) -> None:
            await asyncio.sleep(0.01)

    class Root(zag.Task):
        async def execute(self) -> int:
            return 1

    class Join(zag.Task):
        async def execute(self, a: int, b: int) -> int:
            return 1

    class Flaky(zag.Task):
        calls: list[int]
        failures: int

        async def execute(self) -> int:
            self.calls.append(1)
            if len(self.calls) <= self.failures:
                raise RuntimeError(f"attempt {len(self.calls)} fails on purpose")
            return len(self.calls)

    return {
        "Step": Step,
        "RevertibleStep": RevertibleStep,
        "Boom": Boom,
        "Sleeper": Sleeper,
        "Root": Root,
        "Join": Join,
        "Flaky": Flaky,
    }


_CLASSES: dict[str, type] = {}


def _cls(name: str) -> Any:
    if not _CLASSES:
        _CLASSES.update(_task_classes())
    return _CLASSES[name]


def _ms(stats: Stats) -> Stats:
    return Stats(stats.median * 1e3, stats.min * 1e3, stats.max * 1e3, stats.n)


# --------------------------------------------------------------------------- S1


async def s1_once(n: int) -> Phases:
    import zag_async as zag

    step = _cls("Step")
    t0 = clock()
    flow = zag.linear(
        "s1",
        *(step(name=f"t{i}", rebind={"x": f"v{i - 1}"}, provides=f"v{i}") for i in range(1, n + 1)),
    )
    t1 = clock()
    engine = zag.Engine(flow, store={"v0": 0}, max_concurrency=1)
    t2 = clock()
    results = await _run(engine)
    t3 = clock()
    check(results[f"v{n}"] == n, f"S1: v{n} != {n}")
    total = t3 - t1
    return {
        "build": t1 - t0,
        "prepare": t2 - t1,
        "run": t3 - t2,
        "total": total,
        "per_task_us": total / n * 1e6,
        "run_per_task_us": (t3 - t2) / n * 1e6,
    }


def s1(rec: Recorder, plan: Plan) -> None:
    for size in plan.s1_zag:
        st = measure(
            _loop_run(lambda n=size.n: s1_once(n)), repeats=size.repeats, warmup=size.warmup
        )
        note = f"R={size.repeats}" + ("" if size.warmup else ", warmed by the smaller sizes")
        case = f"N={size.n}"
        rec.add("S1", case, "total", "ms", _ms(st["total"]), note)
        rec.add("S1", case, "build", "ms", _ms(st["build"]))
        rec.add("S1", case, "prepare", "ms", _ms(st["prepare"]))
        rec.add("S1", case, "run", "ms", _ms(st["run"]))
        rec.add("S1", case, "per task", "µs", st["per_task_us"])
        rec.add("S1", case, "run per task", "µs", st["run_per_task_us"])


# --------------------------------------------------------------------------- S2


def s2(rec: Recorder, plan: Plan) -> None:
    import math
    import os

    import zag_async as zag

    n = plan.s2_n
    sleeper = _cls("Sleeper")

    async def once(limit: int | None) -> Phases:
        flow = zag.unordered("s2", *(sleeper(name=f"s{i}") for i in range(n)))
        t0 = clock()
        engine = zag.Engine(flow, max_concurrency=limit)
        await _run(engine)
        t1 = clock()
        check(engine.state == zag.FlowState.SUCCESS, f"S2: flow ended {engine.state}")
        return {"total": t1 - t0}

    default_workers = (os.cpu_count() or 1) * 5  # the peer's default pool size here
    for limit, case in (
        (default_workers, f"conc={default_workers}"),
        (64, "conc=64"),
        (None, "unbounded"),
    ):
        bound = 10 if limit is None else math.ceil(n / limit) * 10
        st = measure(_loop_run(lambda lim=limit: once(lim)), repeats=plan.s2_repeats)
        rec.add("S2", case, "total", "ms", _ms(st["total"]), f"ideal 10 ms, bound {bound} ms")


# --------------------------------------------------------------------------- S3

S3_LAYERS = 20
S3_WIDTH = 100


def s3(rec: Recorder, plan: Plan) -> None:
    import zag_async as zag

    root, join = _cls("Root"), _cls("Join")

    async def once() -> Phases:
        t0 = clock()
        atoms = [root(name=f"n0_{i}", provides=f"v0_{i}") for i in range(S3_WIDTH)]
        for layer in range(1, S3_LAYERS):
            atoms.extend(
                join(
                    name=f"n{layer}_{i}",
                    provides=f"v{layer}_{i}",
                    rebind={"a": f"v{layer - 1}_{i}", "b": f"v{layer - 1}_{(i + 1) % S3_WIDTH}"},
                )
                for i in range(S3_WIDTH)
            )
        flow = zag.graph("s3", *atoms)  # edges inferred from requires/provides
        t1 = clock()
        engine = zag.Engine(flow, max_concurrency=1)
        t2 = clock()
        results = await _run(engine)
        t3 = clock()
        check(results[f"v{S3_LAYERS - 1}_0"] == 1, "S3: v19_0 != 1")
        n = S3_LAYERS * S3_WIDTH
        return {
            "build": t1 - t0,
            "prepare (load..validate)": t2 - t1,
            "run": t3 - t2,
            "run per task": (t3 - t2) / n * 1e6,
        }

    st = measure(_loop_run(once), repeats=plan.s3_repeats, warmup=plan.s3_warmup)
    for phase in ("build", "prepare (load..validate)", "run"):
        rec.add(
            "S3",
            "N=2000",
            phase,
            "s",
            st[phase],
            "Engine() = load+compile+prepare+validate" if phase.startswith("prepare") else "",
        )
    rec.add("S3", "N=2000", "run per task", "µs", st["run per task"])


# --------------------------------------------------------------------------- S4

# A database of its own, dropped and created at the start of S4, so TaskFlow's tables
# (in taskflow_bench) and ours never meet and schema_setup starts from nothing.
S4_PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/zag_bench"
S4_WIDE_N = 200


def _s4_linear(n: int) -> Any:
    import zag_async as zag

    step = _cls("Step")
    return zag.linear(
        "s4",
        *(step(name=f"t{i}", rebind={"x": f"v{i - 1}"}, provides=f"v{i}") for i in range(1, n + 1)),
    )


async def _s4_verify(url: str, flow_id: str, n: int) -> int:
    """The stored record, read back through a new connection, says what the run did.

    Returns:
        The record's version: how many times the flow was written.
    """
    import zag_async as zag

    async with zag.persistence.connect(url, upgrade=False) as backend:
        detail = await backend.load_flow(flow_id)
    check(detail.state == zag.FlowState.SUCCESS, f"S4: stored flow is {detail.state}")
    check(len(detail.atoms) == n, f"S4: {len(detail.atoms)} atoms stored, expected {n}")
    bad = [a.name for a in detail.atoms.values() if a.state != zag.AtomState.SUCCESS]
    check(not bad, f"S4: stored atoms not SUCCESS: {bad[:3]}")
    version: int = detail.version
    return version


async def _s4_window(
    url: str,
    counters: Any,
    body: Callable[[Any], Coroutine[Any, Any, dict[str, float]]],
) -> dict[str, float]:
    """Open a backend, run `body(backend)`, close it; count the commits in between.

    The backend opens with upgrade=False (the schema is in place), so opening costs
    no write of ours; each session's own start-up transaction is subtracted
    (`Counters.net_commits`).
    """
    from accounting import CommitCounter

    import zag_async as zag

    before = counters.snapshot() if counters is not None else None
    sa0 = CommitCounter.get(url)
    async with zag.persistence.connect(url, upgrade=False) as backend:
        phases = await body(backend)
    phases["sa_commits"] = CommitCounter.get(url) - sa0
    if counters is not None:
        delta = counters.snapshot() - before
        phases.update(
            pg_commits=delta.net_commits, pg_rollbacks=delta.rollbacks, pg_sessions=delta.sessions
        )
    return phases


async def _s4_linear_once(url: str, n: int, counters: Any) -> Phases:
    import zag_async as zag

    flow_ids: list[str] = []

    async def body(backend: Any) -> dict[str, float]:
        t0 = clock()
        flow = _s4_linear(n)
        t1 = clock()
        engine = zag.Engine(flow, backend=backend, store={"v0": 0}, max_concurrency=1)
        t2 = clock()
        results = await _run(engine)
        t3 = clock()
        check(results[f"v{n}"] == n, f"S4: v{n} != {n}")
        flow_ids.append(engine.flow_id)
        total = t3 - t1
        return {
            "build": t1 - t0,
            "prepare": t2 - t1,
            "run": t3 - t2,
            "total": total,
            "per_task_us": total / n * 1e6,
            "run_per_task_us": (t3 - t2) / n * 1e6,
        }

    phases = await _s4_window(url, counters, body)
    phases["flow_writes"] = await _s4_verify(url, flow_ids[0], n)
    return phases


async def _s4_wide_once(url: str, n: int, counters: Any) -> Phases:
    import zag_async as zag

    root = _cls("Root")
    flow_ids: list[str] = []

    async def body(backend: Any) -> dict[str, float]:
        flow = zag.unordered("s4w", *(root(name=f"w{i}") for i in range(n)))
        t0 = clock()
        engine = zag.Engine(flow, backend=backend)  # unbounded concurrency
        await _run(engine)
        t1 = clock()
        check(engine.state == zag.FlowState.SUCCESS, f"S4 wide: flow ended {engine.state}")
        flow_ids.append(engine.flow_id)
        return {"total": t1 - t0}

    phases = await _s4_window(url, counters, body)
    phases["flow_writes"] = await _s4_verify(url, flow_ids[0], n)
    return phases


async def _floor_asyncpg(url: str, n: int, mode: str, counters: Any) -> Phases:
    """n single-row transactions straight through asyncpg: the physical floor."""
    import asyncpg
    from accounting import admin_dsn, database_of

    dsn = admin_dsn(url).rsplit("/", 1)[0] + "/" + database_of(url)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS bench_floor (id bigserial PRIMARY KEY, v integer NOT NULL)"
        )
    finally:
        await conn.close()
    before = counters.snapshot() if counters is not None else None
    conn = await asyncpg.connect(dsn)
    try:
        insert = "INSERT INTO bench_floor (v) VALUES ($1)"
        t0 = clock()
        if mode == "tx":
            for i in range(n):
                async with conn.transaction():  # BEGIN; INSERT; COMMIT
                    await conn.execute(insert, i)
        else:
            for i in range(n):
                await conn.execute(insert, i)  # one implicit transaction per statement
        t1 = clock()
    finally:
        await conn.close()
    if counters is None:
        return {"per_commit_ms": (t1 - t0) / n * 1e3}
    delta = counters.snapshot() - before
    return {"per_commit_ms": (t1 - t0) / n * 1e3, "commits": delta.net_commits}


async def _recreate_asyncpg(url: str) -> Phases:
    """Drop and create the bench database without psycopg2 (what PgCounters.recreate does)."""
    import asyncpg
    from accounting import admin_dsn, database_of

    conn = await asyncpg.connect(admin_dsn(url))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{database_of(url)}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{database_of(url)}"')
    finally:
        await conn.close()
    return {}


async def _floor_sqlite(path: str, n: int, wal: bool) -> Phases:
    """n insert+commit pairs through aiosqlite (zag's pragmas, or SQLite's defaults)."""
    import aiosqlite

    async with aiosqlite.connect(path) as db:
        if wal:
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=NORMAL")
        await db.execute("CREATE TABLE IF NOT EXISTS bench_floor (id INTEGER PRIMARY KEY, v INT)")
        await db.commit()
        t0 = clock()
        for i in range(n):
            await db.execute("INSERT INTO bench_floor (v) VALUES (?)", (i,))
            await db.commit()
        t1 = clock()
    return {"per_commit_ms": (t1 - t0) / n * 1e3}


async def _floor_sqlite3(path: str, n: int) -> Phases:
    """n insert+commit pairs through the standard sqlite3 module in this thread, with
    zag's pragmas (WAL, synchronous=NORMAL): the physical floor the issue names."""
    import sqlite3

    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("CREATE TABLE IF NOT EXISTS bench_floor (id INTEGER PRIMARY KEY, v INT)")
        t0 = clock()
        for i in range(n):
            db.execute("BEGIN")
            db.execute("INSERT INTO bench_floor (v) VALUES (?)", (i,))
            db.execute("COMMIT")
        t1 = clock()
    finally:
        db.close()
    return {"per_commit_ms": (t1 - t0) / n * 1e3}


def _per(stats: Stats, n: int, minus: float = 0.0) -> Stats:
    return Stats(
        (stats.median - minus) / n, (stats.min - minus) / n, (stats.max - minus) / n, stats.n
    )


def _s4_report(
    rec: Recorder, case: str, st: dict[str, Stats], n: int, mem_us: float, repeats: int
) -> None:
    ratio = st["per_task_us"].median / mem_us
    rec.add("S4", case, "per task", "µs", st["per_task_us"], f"R={repeats}, {ratio:.1f}x in-memory")
    rec.add("S4", case, "run per task", "µs", st["run_per_task_us"])
    rec.add("S4", case, "total", "s", st["total"])
    if "pg_commits" in st:
        rec.add(
            "S4",
            case,
            "commits per atom (pg_stat)",
            "xact",
            _per(st["pg_commits"], n),
            f"xact_commit delta minus one start-up transaction per session "
            f"({st['pg_sessions'].median:.0f} per run), / {n}",
        )
        rec.add("S4", case, "commits per run (pg_stat)", "xact", st["pg_commits"])
        rec.add(
            "S4",
            case,
            "rollbacks per atom (pg_stat)",
            "xact",
            _per(st["pg_rollbacks"], n),
            "pool_pre_ping: BEGIN; SELECT; ROLLBACK before each commit",
        )
    rec.add(
        "S4",
        case,
        "SQLAlchemy COMMITs per atom",
        "xact",
        _per(st["sa_commits"], n),
        "counted by a SQLAlchemy commit event; includes read-only transactions",
    )
    rec.add(
        "S4",
        case,
        "flow writes per atom",
        "xact",
        _per(st["flow_writes"], n),
        "FlowDetail.version / N (N+1 = one commit per atom plus the first)",
    )


def s4(rec: Recorder, plan: Plan) -> None:
    import os
    import tempfile

    from accounting import CommitCounter, PgCounters

    import zag_async as zag

    CommitCounter.install()
    n = plan.s4_n
    repeats = plan.s4_repeats_zag
    runner = _loop_run  # one event loop for the whole scenario
    mem = measure(runner(lambda: s1_once(n)), repeats=repeats)
    mem_us = mem["per_task_us"].median
    rec.add("S4", "in-memory", "per task", "µs", mem["per_task_us"], f"S1 N={n}, same process")

    async def timed_upgrade(url: str) -> Phases:
        t0 = clock()
        await zag.persistence.upgrade(url)
        return {"schema_setup": clock() - t0}

    # (a) SQLite file, deleted before the scenario.
    with tempfile.TemporaryDirectory(prefix="zag-bench-") as tmp:
        path = os.path.join(tmp, "s4.db")
        url = f"sqlite+aiosqlite:///{path}"
        try:
            for suffix in ("", "-wal", "-shm", "-journal"):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path + suffix)
            schema = runner(lambda: timed_upgrade(url))()
            st = measure(runner(lambda: _s4_linear_once(url, n, None)), repeats=repeats)
            _s4_report(rec, "sqlite", st, n, mem_us, repeats)
            rec.add(
                "S4",
                "sqlite",
                "schema_setup",
                "ms",
                [schema["schema_setup"] * 1e3],
                "upgrade() on a new file",
            )
            floor_path = os.path.join(tmp, "floor.db")
            raw = measure(runner(lambda: _floor_sqlite3(floor_path, n)), repeats=repeats)
            rec.add(
                "S4",
                "sqlite",
                "raw commit, sqlite3 WAL+NORMAL",
                "ms",
                raw["per_commit_ms"],
                f"standard sqlite3 module: {n} x BEGIN; INSERT one row; COMMIT (the floor)",
            )
            floors = {}
            for wal, label in ((True, "WAL+NORMAL (zag's pragmas)"), (False, "default journal")):
                fl = measure(runner(lambda w=wal: _floor_sqlite(floor_path, n, w)), repeats=repeats)
                floors[wal] = fl["per_commit_ms"].median
                rec.add(
                    "S4",
                    "sqlite",
                    f"aiosqlite commit, {label}",
                    "ms",
                    fl["per_commit_ms"],
                    f"aiosqlite: {n} x INSERT one row + COMMIT; per commit",
                )
            per_atom_ms = st["per_task_us"].median / 1e3
            floor = raw["per_commit_ms"].median
            rec.add(
                "S4",
                "sqlite",
                "per task / raw commit",
                "x",
                [per_atom_ms / floor],
                f"{per_atom_ms:.3f} ms per atom vs {floor:.3f} ms per sqlite3 WAL commit; "
                "target <= 5x",
            )
        except Exception as exc:  # report, don't abort the whole bench
            rec.missing("S4", "sqlite", "per task", "µs", f"failed: {type(exc).__name__}: {exc}")

    # (b) PostgreSQL, a dedicated database recreated for the session.
    url = S4_PG_URL
    counters: PgCounters | None = None
    try:
        counters = PgCounters(url)
    except ImportError as exc:  # psycopg2 comes with the bench session: time, count nothing
        rec.add(
            "S4",
            "postgres",
            "note",
            "",
            None,
            f"no pg_stat commit counts: {exc} (the nox bench session installs it)",
        )
    except Exception as exc:
        rec.missing(
            "S4", "postgres", "per task", "µs", f"skipped: {type(exc).__name__}: {str(exc).strip()}"
        )
        return
    try:
        if counters is not None:
            counters.recreate()
        else:
            runner(lambda: _recreate_asyncpg(url))()
        schema = runner(lambda: timed_upgrade(url))()
        st = measure(runner(lambda: _s4_linear_once(url, n, counters)), repeats=repeats)
        _s4_report(rec, "postgres", st, n, mem_us, repeats)
        rec.add(
            "S4",
            "postgres",
            "schema_setup",
            "ms",
            [schema["schema_setup"] * 1e3],
            "upgrade() in a new database",
        )
        floors = {}
        for mode, label in (("tx", "BEGIN/INSERT/COMMIT"), ("auto", "autocommit INSERT")):
            fl = measure(
                runner(lambda m=mode: _floor_asyncpg(url, n, m, counters)), repeats=repeats
            )
            floors[mode] = fl
            counted = (
                f"; pg_stat counted {fl['commits'].median / n:.2f} commits per insert"
                if "commits" in fl
                else ""
            )
            rec.add(
                "S4",
                "postgres",
                f"raw commit, {label}",
                "ms",
                fl["per_commit_ms"],
                f"asyncpg: {n} x one row per transaction{counted}",
            )
        per_atom_ms = st["per_task_us"].median / 1e3
        rec.add(
            "S4",
            "postgres",
            "per task / raw commit",
            "x",
            [per_atom_ms / floors["tx"]["per_commit_ms"].median],
            f"{per_atom_ms:.3f} ms per atom vs "
            f"{floors['tx']['per_commit_ms'].median:.3f} ms per BEGIN/INSERT/COMMIT",
        )

        wide = measure(runner(lambda: _s4_wide_once(url, S4_WIDE_N, counters)), repeats=repeats)
        case = f"postgres {S4_WIDE_N}-wide"
        rec.add(
            "S4",
            case,
            "total",
            "ms",
            _ms(wide["total"]),
            f"unordered flow of {S4_WIDE_N} no-op atoms, unbounded concurrency",
        )
        if "pg_commits" in wide:
            rec.add(
                "S4",
                case,
                "commits (pg_stat)",
                "xact",
                wide["pg_commits"],
                "xact_commit delta minus session start-ups; target <= 20",
            )
        rec.add("S4", case, "SQLAlchemy COMMITs", "xact", wide["sa_commits"])
        rec.add("S4", case, "flow writes", "xact", wide["flow_writes"])
        if counters is not None and counters.stray_waits:
            rec.add(
                "S4",
                "postgres",
                "note",
                "",
                None,
                f"{counters.stray_waits} windows timed out waiting for other sessions "
                f"on {counters.dbname}: their commits may be counted",
            )
    except Exception as exc:
        rec.missing("S4", "postgres", "per task", "µs", f"failed: {type(exc).__name__}: {exc}")
    finally:
        if counters is not None:
            counters.close()


# --------------------------------------------------------------------------- S5


def s5(rec: Recorder, plan: Plan) -> None:
    import zag_async as zag

    n = plan.s5_n
    step, boom = _cls("RevertibleStep"), _cls("Boom")

    async def once() -> Phases:
        reverted: list[str] = []
        raised_at: list[float] = []
        atoms = []
        for i in range(1, n):
            t = step(name=f"t{i}", rebind={"x": f"v{i - 1}"}, provides=f"v{i}")
            t.reverted = reverted
            atoms.append(t)
        last = boom(name=f"t{n}", rebind={"x": f"v{n - 1}"}, provides=f"v{n}")
        last.raised_at = raised_at
        atoms.append(last)
        flow = zag.linear("s5", *atoms)
        t0 = clock()
        engine = zag.Engine(flow, store={"v0": 0}, max_concurrency=1)
        try:
            await _run(engine)
        except RuntimeError:
            t2 = clock()
        else:
            raise AssertionError("S5: the engine did not re-raise")
        check(engine.state == zag.FlowState.REVERTED, f"S5: flow ended {engine.state}")
        expected = [f"t{i}" for i in range(n - 1, 0, -1)]
        check(reverted == expected, f"S5: reverts out of order ({len(reverted)} happened)")
        t1 = raised_at[0]
        return {
            "total": t2 - t0,
            "forward": t1 - t0,
            "revert_phase": t2 - t1,
            "revert per task": (t2 - t1) / (n - 1) * 1e6,
        }

    st = measure(_loop_run(once), repeats=plan.s5_repeats)
    rec.add("S5", f"N={n}", "total", "ms", _ms(st["total"]))
    rec.add("S5", f"N={n}", "forward", "ms", _ms(st["forward"]))
    rec.add("S5", f"N={n}", "revert_phase", "ms", _ms(st["revert_phase"]))
    rec.add("S5", f"N={n}", "revert per task", "µs", st["revert per task"])


# --------------------------------------------------------------------------- S6


def s6(rec: Recorder, plan: Plan) -> None:
    import zag_async as zag

    flaky = _cls("Flaky")

    async def once(failures: int) -> Phases:
        t = flaky(name="flaky")
        t.calls, t.failures = [], failures
        flow = zag.linear("s6", t, retry=zag.retry.Times(5, name="times", provides="attempt"))
        t0 = clock()
        engine = zag.Engine(flow, max_concurrency=1)
        results = await _run(engine)
        t1 = clock()
        check(len(t.calls) == failures + 1, f"S6: task called {len(t.calls)} times")
        check(engine.state == zag.FlowState.SUCCESS, f"S6: flow ended {engine.state}")
        attempt = results["attempt"]
        check(attempt == failures + 1, f"S6: controller reports attempt {attempt}")
        return {"total": t1 - t0}

    st4 = measure(_loop_run(lambda: once(4)), repeats=plan.s6_repeats)
    st0 = measure(_loop_run(lambda: once(0)), repeats=plan.s6_repeats)
    rec.add("S6", "4 failures", "total", "ms", _ms(st4["total"]), "5 calls, attempt 5")
    rec.add("S6", "0 failures", "total", "ms", _ms(st0["total"]))
    per_retry = (st4["total"].median - st0["total"].median) / 4 * 1e6
    rec.add("S6", "derived", "per retry", "µs", [per_retry], "(t4 - t0) / 4 of medians")


SCENARIOS: dict[str, Callable[[Recorder, Plan], None]] = {
    "S1": s1,
    "S2": s2,
    "S3": s3,
    "S4": s4,
    "S5": s5,
    "S6": s6,
}
