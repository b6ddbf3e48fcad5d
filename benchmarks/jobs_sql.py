"""Scenario JOBS, SQL boards: conductors on SQLite and PostgreSQL job boards, beside the raw floor.

What is measured (N pre-posted no-op jobs per case, `jobs:noop_flow`):

- the floor: the board's own claim statement (PostgreSQL: UPDATE ... WHERE seq =
  (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING, with nextval for the token;
  SQLite: UPDATE ... RETURNING taking the next token from the counter row), one
  statement = one transaction, run sequentially on N posted rows;
- one conductor in this process (max_jobs 1 and 8), flows in memory:// and in
  the board's own database (one file / database for everything);
- one and four conductors as subprocesses (flows in the board's database).

`jobs.zag_scenario` calls `sql_scenario` first, so the SQL and ZooKeeper boards
are measured in the same run. Figures are rows of the shared Recorder.
"""

from __future__ import annotations

import asyncio
import collections
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import Plan, Recorder, check, clock

HERE = Path(__file__).resolve().parent
SCENARIO = "JOBS"
FACTORY = "jobs:noop_flow"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
PG_DB = "zag_bench_sqlboard"

_PG_NOW = "EXTRACT(EPOCH FROM statement_timestamp())"
_PG_CLAIM = f"""
UPDATE zag_jobs SET owner = 'raw', version = version + 1, lease_until = {_PG_NOW} + 30,
  token = nextval('zag_job_tokens')
WHERE seq = (SELECT seq FROM zag_jobs WHERE uuid = :uuid
             AND (owner IS NULL OR lease_until <= {_PG_NOW}) AND due_at <= {_PG_NOW}
             FOR UPDATE SKIP LOCKED)
RETURNING *
"""
_SQLITE_NOW = "((julianday('now') - 2440587.5) * 86400.0)"
_SQLITE_CLAIM = f"""
UPDATE zag_jobs SET owner = 'raw', version = version + 1, lease_until = {_SQLITE_NOW} + 30,
  token = (SELECT value + 1 FROM zag_job_counters WHERE name = 'token')
WHERE uuid = :uuid AND (owner IS NULL OR lease_until <= {_SQLITE_NOW})
  AND due_at <= {_SQLITE_NOW}
RETURNING *
"""


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def _fresh_pg() -> str:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN, timeout=5)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{PG_DB}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{PG_DB}"')
    finally:
        await conn.close()
    return f"postgresql+asyncpg://postgres@127.0.0.1:5432/{PG_DB}"


async def fresh_url(kind: str, workdir: str) -> str:
    """An empty database for one case."""
    if kind == "postgres":
        return await _fresh_pg()
    return f"sqlite+aiosqlite:///{workdir}/board-{time.monotonic_ns()}.db"


async def post_jobs(url: str, n: int, backend: Any) -> tuple[float, list[str]]:
    """Post n no-op jobs (flow records in `backend`); returns (seconds, job ids)."""
    import zag_async as zag

    async with zag.jobs.connect(url, backend=backend) as board:
        t = clock()
        ids = [(await board.post(f"noop-{i}", FACTORY)).uuid for i in range(n)]
        return clock() - t, ids


async def raw_claims(url: str, n: int) -> float:
    """Seconds for n sequential claim transactions (the floor)."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    import zag_async as zag

    async with zag.connect("memory://") as backend:
        _, ids = await post_jobs(url, n, backend)
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    claim = text(_PG_CLAIM if url.startswith("postgresql") else _SQLITE_CLAIM)
    try:
        async with engine.connect() as conn:
            t = clock()
            for job_id in ids:
                (await conn.execute(claim, {"uuid": job_id})).one()
            return clock() - t
    finally:
        await engine.dispose()


async def inprocess(url: str, n: int, max_jobs: int, persistence: str) -> dict[str, Any]:
    """One conductor in this event loop on n pre-posted jobs."""
    import zag_async as zag

    out: dict[str, Any] = {}
    kinds: collections.Counter[str] = collections.Counter()
    done = asyncio.Event()
    last = [0.0]

    def on_event(event: Any) -> None:
        kinds[event.kind] += 1
        if event.kind == "consumed":
            last[0] = clock()
            if kinds["consumed"] >= n:
                done.set()

    async with zag.connect(persistence) as backend, zag.jobs.connect(url, backend=backend) as board:
        out["post_s"], _ = await post_jobs(url, n, backend)
        conductor = zag.Conductor(
            board, backend=backend, name="c0", max_jobs=max_jobs, listeners=[on_event]
        )
        t0, c0 = clock(), time.process_time()
        task = asyncio.create_task(conductor.run())
        async with asyncio.timeout(max(120.0, n * 0.2)):
            await done.wait()
        out["run_s"] = last[0] - t0
        out["cpu_s"] = time.process_time() - c0
        conductor.stop()
        await task
        out["remaining"] = len(await board.jobs())
    out["kinds"] = dict(kinds)
    return out


async def subprocesses(url: str, n: int, conductors: int) -> dict[str, Any]:
    """`conductors` conductor processes (jobs.py conductor) on n pre-posted jobs."""
    from jobs import conductor_processes

    import zag_async as zag

    async with zag.connect(url) as backend:

        async def post_all() -> float:
            seconds, _ = await post_jobs(url, n, backend)
            return seconds

        out = await conductor_processes(url, url, n, conductors, 1, "pre", post_all)
        async with zag.jobs.connect(url, backend=backend) as board:
            out["remaining"] = len(await board.jobs())
    return out


def _record(
    rec: Recorder, case: str, n: int, r: dict[str, Any], floor_ms: float, note: str
) -> None:
    kinds = r.get("kinds", {})
    check(kinds.get("consumed", 0) == n, f"{case}: consumed {kinds} of {n}")
    check(r.get("remaining", 0) == 0, f"{case}: {r.get('remaining')} jobs left on the board")
    ms_job = r["run_s"] * 1e3 / n
    if "per_conductor" in r:
        note += f"; jobs per conductor {r['per_conductor']}"
    rec.add(SCENARIO, case, "post", "jobs/s", [n / r["post_s"]], "one poster, sequential")
    rec.add(
        SCENARIO,
        case,
        "completed",
        "jobs/s",
        [n / r["run_s"]],
        f"claim+run+consume after posting; {note}",
    )
    rec.add(SCENARIO, case, "per job", "ms", [ms_job])
    if "cpu_s" in r:
        rec.add(
            SCENARIO,
            case,
            "CPU per job",
            "ms",
            [r["cpu_s"] * 1e3 / n],
            r.get("cpu_where", "this process"),
        )
    rec.add(
        SCENARIO,
        case,
        "rate / raw claim rate",
        "%",
        [floor_ms / ms_job * 100],
        f"{floor_ms:.3f} ms per raw claim transaction; target >= 50% (1 conductor)",
    )


def sql_scenario(rec: Recorder, plan: Plan) -> None:
    """The SQL boards' rows of JOBS (zag side)."""
    n = plan.jobs_n
    try:
        import sqlalchemy  # noqa: F401
    except ImportError as exc:
        rec.missing(SCENARIO, "sql", "completed", "jobs/s", f"skipped: {exc}")
        return
    with tempfile.TemporaryDirectory(prefix="zag-bench-sql-") as workdir:
        for kind in ("sqlite", "postgres"):
            try:
                asyncio.run(fresh_url(kind, workdir))
            except Exception as exc:
                rec.missing(
                    SCENARIO,
                    f"{kind}: all",
                    "completed",
                    "jobs/s",
                    f"skipped: {type(exc).__name__}: {exc}",
                )
                continue
            _one_kind(rec, kind, n, workdir)


def _one_kind(rec: Recorder, kind: str, n: int, workdir: str) -> None:
    def url() -> str:
        return asyncio.run(fresh_url(kind, workdir))

    log(f"zag: JOBS {kind} raw claim floor (N={n})")
    floor_ms = asyncio.run(raw_claims(url(), n)) * 1e3 / n
    rec.add(
        SCENARIO,
        f"{kind}: raw claim statement",
        "per claim",
        "ms",
        [floor_ms],
        f"the board's claim UPDATE, one transaction each, {n} sequential; the floor",
    )
    rec.add(SCENARIO, f"{kind}: raw claim statement", "claims/s", "1/s", [1e3 / floor_ms])
    cases: list[tuple[str, Any, str]] = [
        (
            f"{kind}: 1 cond max_jobs=1, flows memory://",
            lambda u: inprocess(u, n, 1, "memory://"),
            "in-process, flows in memory",
        ),
        (
            f"{kind}: 1 cond max_jobs=8, flows memory://",
            lambda u: inprocess(u, n, 8, "memory://"),
            "in-process, flows in memory",
        ),
        (
            f"{kind}: 1 cond max_jobs=1, flows same db",
            lambda u: inprocess(u, n, 1, u),
            "in-process, flows in the board's database",
        ),
        (
            f"{kind}: 1 cond subprocess",
            lambda u: subprocesses(u, n, 1),
            "1 conductor process, flows in the board's database",
        ),
        (
            f"{kind}: 4 cond subprocesses",
            lambda u: subprocesses(u, n, 4),
            "4 conductor processes, flows in the board's database",
        ),
    ]
    for case, make, note in cases:
        log(f"zag: JOBS {case} (N={n})")
        try:
            r = asyncio.run(make(url()))
            _record(rec, case, n, r, floor_ms, note)
        except Exception as exc:
            rec.missing(
                SCENARIO, case, "completed", "jobs/s", f"failed: {type(exc).__name__}: {exc}"
            )


if __name__ == "__main__":  # a quick look without run.py: python benchmarks/jobs_sql.py [N]
    quick = Recorder("zag")
    sql_scenario(quick, Plan(jobs_n=int(sys.argv[1]) if len(sys.argv) > 1 else 300))
    for row in quick.rows:
        value = "-" if row.stats is None else f"{row.stats.median:.2f}"
        print(f"{row.case:48} {row.metric:24} {value:>10} {row.unit:7} {row.note}")
