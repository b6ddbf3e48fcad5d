"""Scenario PEERS: zag beside DBOS Transact and Celery, in the same run, as ratios.

What is measured (issue 15, item 5); every database, file, queue and process made
here is removed at the end, on error too:

- **Serial durable steps**: one workflow of ``N`` no-op steps run serially (DBOS
  ``@DBOS.workflow`` calling ``@DBOS.step`` ``N`` times; zag the S4 flow: ``N``
  no-op atoms, ``max_concurrency=1``), per step in us = wall time / ``N``.
- **Concurrent workflows**: 1,000 workflows of 3 no-op steps started at once
  (DBOS: ``asyncio.gather`` of async workflows, and ``DBOS.start_workflow`` on
  its thread pool for the sync API; zag: S8's ``many.concurrent``, 1,000
  engines under one task group) -> workflows/s.
- Both on a SQLite file (all files in one temporary folder, so the same disk;
  DBOS's file switched to WAL with ``synchronous=NORMAL``, zag's pragmas, since
  DBOS leaves SQLite's rollback journal) and on PostgreSQL at 127.0.0.1:5432
  (a fresh database per case, dropped after). The floor beside them is one raw
  single-row commit (aiosqlite WAL; asyncpg BEGIN/INSERT/COMMIT), from S4.
- **Celery** on the same RabbitMQ as REMOTE (broker ``amqp://guest@127.0.0.1//``,
  result backend ``rpc://``): one worker subprocess with ``--pool solo`` (one
  process, no child pool: the cheapest way to run a no-op), a no-op task; round
  trip p50/p99 of sequential ``delay().get()`` calls from this (asyncio-free)
  thread, and round trips/s with 64 in flight (a sliding window). run.py sets
  these beside zag's REMOTE figures when both ran (``cross_table``).

DBOS keeps global state (one ``DBOS`` instance, a registry of functions), so each
DBOS case runs in a fresh subprocess (``peers.py dbos ...``) that prints its
figures as JSON. Rows carry their side (``zag``, ``DBOS async``, ``DBOS sync``,
``Celery``, ``floor``) and are printed by :func:`print_table`, not run.py's
zag/TaskFlow table.

``python benchmarks/peers.py [--quick] [--serial-n 20] [--concurrent-n 20] [--celery-n 200]
[--rounds 1] [--parts dbos,celery] [--databases sqlite,postgres] [--no-sync]`` runs the
scenario alone and prints its table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import (
    PEER,
    Measurement,
    Plan,
    Recorder,
    Stats,
    check,
    clock,
    dist_version,
    drop_pg,
    fresh_pg,
    print_columns,
)

HERE = Path(__file__).resolve().parent
SCENARIO = "PEERS"
ZAG_SIDE = "zag"
DBOS_ASYNC = "DBOS async"
DBOS_SYNC = "DBOS sync"
CELERY = "Celery"
FLOOR = "floor"
BROKER = "amqp://guest:guest@127.0.0.1//"
SERIAL_TARGET = 3.0  # zag at least 3x faster per serial step than DBOS
CONCURRENT_TARGET = 10.0  # zag at least 10x DBOS's throughput at 1,000 concurrent workflows


@dataclass(frozen=True)
class Sizes:
    serial_n: int = 200  # steps in the serial workflow
    serial_repeats: int = 5  # rounds: each side once per round, interleaved
    concurrent_n: int = 1000  # workflows of three steps at once
    concurrent_repeats: int = 3
    celery_seq_n: int = 2000  # sequential round trips
    celery_rate_n: int = 2000  # round trips per rate run, 64 in flight
    celery_rate_repeats: int = 3
    dbos_sync: bool = True  # also DBOS's synchronous API


FULL = Sizes()
QUICK = Sizes(
    serial_repeats=2,
    concurrent_repeats=1,
    celery_seq_n=1000,
    celery_rate_n=1000,
    celery_rate_repeats=1,
)
IN_FLIGHT = 64


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _add(
    rec: Recorder,
    side: str,
    case: str,
    metric: str,
    unit: str,
    values: list[float] | None,
    note: str = "",
) -> None:
    """A row of this scenario for ``side`` (rows of every side go to run.py's zag list)."""
    stats = Stats.of(values) if values else None
    rec.rows.append(Measurement(side, SCENARIO, case, metric, unit, stats, note))


# --------------------------------------------------------------------------- DBOS (child)


def dbos_child(args: argparse.Namespace) -> dict[str, Any]:
    """One DBOS case in this (fresh) process: launch, warm up, measure, destroy."""
    import sqlalchemy
    from dbos import DBOS, DBOSConfig

    url: str = args.url
    if url.startswith("sqlite"):
        # WAL is kept in the file; synchronous is per connection: set on every new one.
        with contextlib.closing(sqlite3.connect(url.split("///", 1)[1])) as conn:
            conn.execute("PRAGMA journal_mode=WAL")

        @sqlalchemy.event.listens_for(sqlalchemy.engine.Engine, "connect")
        def _normal(dbapi_conn: Any, _record: Any) -> None:
            if isinstance(dbapi_conn, sqlite3.Connection):
                dbapi_conn.execute("PRAGMA synchronous=NORMAL")

    config: DBOSConfig = {
        "name": "zag-bench-peers",
        "system_database_url": url,
        "run_admin_server": False,
        "log_level": "WARNING",
    }
    DBOS(config=config)

    @DBOS.step()
    async def noop_async() -> int:
        return 1

    @DBOS.step()
    def noop_sync() -> int:
        return 1

    @DBOS.workflow()
    async def serial_async(n: int) -> int:
        return sum([await noop_async() for _ in range(n)])

    @DBOS.workflow()
    def serial_sync(n: int) -> int:
        return sum(noop_sync() for _ in range(n))

    @DBOS.workflow()
    async def three_async() -> int:
        return await noop_async() + await noop_async() + await noop_async()

    @DBOS.workflow()
    def three_sync() -> int:
        return noop_sync() + noop_sync() + noop_sync()

    def serial_once(n: int) -> float:
        t0 = clock()
        total = asyncio.run(serial_async(n)) if args.api == "async" else serial_sync(n)
        wall = clock() - t0
        check(total == n, f"DBOS serial workflow returned {total}, not {n}")
        return wall

    def concurrent_once(n: int) -> float:
        async def gather() -> list[int]:
            return list(await asyncio.gather(*(three_async() for _ in range(n))))

        t0 = clock()
        if args.api == "async":
            results = asyncio.run(gather())
        else:
            handles = [DBOS.start_workflow(three_sync) for _ in range(n)]
            results = [h.get_result() for h in handles]
        wall = clock() - t0
        check(results == [3] * n, "a DBOS workflow returned something else than 3")
        return wall

    DBOS.launch()
    try:
        out: dict[str, Any] = {"dbos": dist_version("dbos"), "api": args.api}
        if url.startswith("sqlite"):
            out["pragmas"] = _sqlite_pragmas()
        if args.shape == "serial":
            serial_once(min(args.n, 20))  # warm-up: connections, statement caches
            out["per_step_us"] = [serial_once(args.n) / args.n * 1e6 for _ in range(args.repeats)]
        else:
            concurrent_once(min(args.n, 50))
            out["per_s"] = [args.n / concurrent_once(args.n) for _ in range(args.repeats)]
        return out
    finally:
        DBOS.destroy(destroy_registry=True)


def _sqlite_pragmas() -> str:
    """journal_mode and synchronous as DBOS's own engine sees them (proof of WAL+NORMAL)."""
    from dbos._dbos import _get_dbos_instance  # private: only to read back the settings

    engine = _get_dbos_instance()._sys_db.engine
    with engine.connect() as conn:
        journal = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
        sync = conn.exec_driver_sql("PRAGMA synchronous").scalar()
    names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
    return f"journal_mode={journal}, synchronous={names.get(sync, sync)}"


def run_dbos(url: str, api: str, shape: str, n: int, repeats: int) -> dict[str, Any]:
    """Run one DBOS case in a subprocess; its JSON figures (RuntimeError when it fails)."""
    cmd = [
        sys.executable,
        str(HERE / "peers.py"),
        "dbos",
        "--url",
        url,
        "--api",
        api,
        "--shape",
        shape,
        "--n",
        str(n),
        "--repeats",
        str(repeats),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"DBOS {api} {shape} exited {proc.returncode}: {tail}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


# --------------------------------------------------------------------------- databases


@contextlib.contextmanager
def pg_database(prefix: str) -> Iterator[str]:
    """A fresh PostgreSQL database (its plain ``postgresql://`` URL), dropped on the way out."""
    url = asyncio.run(fresh_pg(f"peers_{prefix}"))
    try:
        yield url.replace("postgresql+asyncpg://", "postgresql://", 1)
    finally:
        asyncio.run(drop_pg(url))


def _zag_url(bare: str) -> str:
    if bare.startswith("postgresql://"):
        return bare.replace("postgresql://", "postgresql+asyncpg://", 1)
    return bare.replace("sqlite:///", "sqlite+aiosqlite:///", 1)


def _fresh(db: str, workdir: str, name: str) -> contextlib.AbstractContextManager[str]:
    """A new database of kind ``db``: a SQLite file in ``workdir``, or a PostgreSQL database."""
    if db == "sqlite":
        return contextlib.nullcontext(f"sqlite:///{workdir}/{name}-{uuid.uuid4().hex[:6]}.db")
    return pg_database(name)


# --------------------------------------------------------------------------- zag


def zag_serial(bare: str, n: int, repeats: int) -> list[float]:
    """zag's S4 flow (n no-op atoms, serial) per atom in us, on a fresh schema."""
    import zag_side

    import zag_async as zag

    url = _zag_url(bare)

    async def go() -> list[float]:
        await zag.persistence.upgrade(url)
        await zag_side._s4_linear_once(url, min(n, 20), None)  # warm-up
        return [
            float((await zag_side._s4_linear_once(url, n, None))["per_task_us"])
            for _ in range(repeats)
        ]

    return asyncio.run(go())


def zag_concurrent(bare: str, n: int, repeats: int) -> list[float]:
    """S8's n concurrent three-atom flows, flows/s (RuntimeError if any flow failed)."""
    import many

    import zag_async as zag

    url = _zag_url(bare)

    async def go() -> list[float]:
        await zag.persistence.upgrade(url)
        await many.concurrent(url, min(n, 50))  # warm-up
        rates = []
        for _ in range(repeats):
            r = await many.concurrent(url, n)
            if r["failed"]:
                raise RuntimeError(f"{r['failed']} of {n} zag flows failed: {r['first_error']}")
            rates.append(n / r["wall_s"])
        return rates

    return asyncio.run(go())


def floor_commit_us(bare: str, workdir: str, n: int) -> float:
    """One raw single-row commit in us (S4's floors: sqlite3 WAL, asyncpg transaction)."""
    import zag_side

    if bare.startswith("sqlite"):
        path = os.path.join(workdir, f"floor-{uuid.uuid4().hex[:6]}.db")
        phases = asyncio.run(zag_side._floor_sqlite3(path, n))
    else:
        phases = asyncio.run(zag_side._floor_asyncpg(_zag_url(bare), n, "tx", None))
    return float(phases["per_commit_ms"]) * 1e3


# --------------------------------------------------------------------------- DBOS vs zag


@dataclass
class Subject:
    """One side's figure in one case, measured once per round on a fresh database."""

    side: str
    case: str
    metric: str
    unit: str
    run: Callable[[str], tuple[list[float], str]]  # database URL -> (values, note)
    note: str = ""
    values: list[float] = field(default_factory=list)
    failed: str = ""


def _rounds(rec: Recorder, db: str, workdir: str, subjects: list[Subject], rounds: int) -> None:
    """Measure every subject once per round, the order reversed every other round.

    The machine's load drifts (it is shared): interleaving lets zag and its peers see the
    same load, as REMOTE does; each measurement gets a fresh SQLite file or database.
    """
    for r in range(rounds):
        for s in subjects if r % 2 == 0 else subjects[::-1]:
            if s.failed:
                continue
            log(f"zag: PEERS {s.side}: {s.case} (round {r + 1}/{rounds})")
            try:
                with _fresh(db, workdir, s.side.split()[0].lower()) as url:
                    values, note = s.run(url)
            except Exception as exc:
                traceback.print_exc(file=sys.stderr)
                s.failed = f"failed: {type(exc).__name__}: {exc}"[:300]
                continue
            s.values += values
            s.note = note or s.note
    for s in subjects:
        _add(
            rec,
            s.side,
            s.case,
            s.metric,
            s.unit,
            None if s.failed else s.values,
            s.failed or s.note,
        )


def durable(rec: Recorder, sizes: Sizes, workdir: str, databases: tuple[str, ...]) -> None:
    """DBOS (async, and sync) and zag, serial and concurrent, on each database."""
    apis = ("async", "sync") if sizes.dbos_sync else ("async",)
    sides = {"async": DBOS_ASYNC, "sync": DBOS_SYNC}

    def dbos(api: str, shape: str, n: int) -> Callable[[str], tuple[list[float], str]]:
        def run(url: str) -> tuple[list[float], str]:
            out = run_dbos(url, api, shape, n, 1)
            values = out["per_step_us"] if shape == "serial" else out["per_s"]
            return values, f"dbos {out['dbos']}; {out.get('pragmas', '')}".rstrip("; ")

        return run

    for db in databases:
        serial_case = f"{db}: 1 workflow of {sizes.serial_n} steps"
        conc_case = f"{db}: {sizes.concurrent_n:,} concurrent x 3 steps"
        floor_note = (
            "one raw single-row commit: sqlite3 module, WAL+NORMAL"
            if db == "sqlite"
            else "one raw single-row commit: asyncpg BEGIN/INSERT/COMMIT"
        )
        serial = [
            Subject(
                ZAG_SIDE,
                serial_case,
                "per step",
                "µs",
                lambda url: (zag_serial(url, sizes.serial_n, 1), ""),
            ),
            Subject(
                FLOOR,
                serial_case,
                "per step",
                "µs",
                lambda url: ([floor_commit_us(url, workdir, sizes.serial_n)], ""),
                note=floor_note,
            ),
            *(
                Subject(
                    sides[api], serial_case, "per step", "µs", dbos(api, "serial", sizes.serial_n)
                )
                for api in apis
            ),
        ]
        _rounds(rec, db, workdir, serial, sizes.serial_repeats)
        concurrent = [
            Subject(
                ZAG_SIDE,
                conc_case,
                "workflows/s",
                "1/s",
                lambda url: (zag_concurrent(url, sizes.concurrent_n, 1), ""),
            ),
            *(
                Subject(
                    sides[api],
                    conc_case,
                    "workflows/s",
                    "1/s",
                    dbos(api, "concurrent", sizes.concurrent_n),
                )
                for api in apis
            ),
        ]
        _rounds(rec, db, workdir, concurrent, sizes.concurrent_repeats)


# --------------------------------------------------------------------------- Celery


def celery_app(queue: str) -> tuple[Any, Any]:
    """The Celery app and its no-op task, the same in the client and the worker."""
    from celery import Celery

    app = Celery("zag_bench_peers", broker=BROKER, backend="rpc://")
    app.conf.update(
        task_default_queue=queue,
        worker_enable_remote_control=False,  # no pidbox queue per worker
        worker_send_task_events=False,
        task_send_sent_event=False,
        worker_hijack_root_logger=False,
        worker_prefetch_multiplier=IN_FLIGHT,
        broker_connection_retry_on_startup=True,
        result_persistent=False,
    )

    @app.task(name="zag_bench.noop")
    def noop() -> None:
        return None

    return app, noop


def celery_worker(queue: str) -> None:
    """The worker's main; it exits by itself if the bench process that started it dies."""
    import threading

    parent = os.getppid()

    def orphaned() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(1)

    threading.Thread(target=orphaned, daemon=True).start()
    app, _ = celery_app(queue)
    app.worker_main(
        [
            "worker",
            "--pool",
            "solo",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--loglevel",
            "WARNING",
            "-Q",
            queue,
        ]
    )


def _percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q / 100))]


def celery(rec: Recorder, sizes: Sizes, workdir: str) -> None:
    """A Celery worker subprocess (--pool solo) and the round trips to it."""
    import socket

    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=3).close()
    except OSError as exc:
        _add(
            rec,
            CELERY,
            "remote no-op round trip",
            "round trip p50",
            "ms",
            None,
            f"skipped: RabbitMQ at 127.0.0.1:5672 is not reachable: {exc}",
        )
        return
    queue = f"zag-bench-celery-{uuid.uuid4().hex[:8]}"
    app, noop = celery_app(queue)
    worker_log = Path(workdir, "celery-worker.log")
    case = "remote no-op round trip"
    note = f"celery {dist_version('celery')}, 1 worker --pool solo, rpc:// results"
    with worker_log.open("wb") as out:
        worker = subprocess.Popen(
            [sys.executable, str(HERE / "peers.py"), "celery-worker", "--queue", queue],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        log("zag: PEERS Celery worker starting")
        noop.delay().get(timeout=60)
        for _ in range(min(200, sizes.celery_seq_n)):  # warm-up
            noop.delay().get(timeout=30)
        log(f"zag: PEERS Celery {sizes.celery_seq_n} sequential round trips")
        lat = []
        for _ in range(sizes.celery_seq_n):
            t0 = clock()
            noop.delay().get(timeout=30)
            lat.append((clock() - t0) * 1e3)
        lat.sort()
        _add(
            rec,
            CELERY,
            case,
            "round trip p50",
            "ms",
            [statistics.median(lat)],
            f"{len(lat)} sequential delay().get(); {note}",
        )
        _add(rec, CELERY, case, "round trip p99", "ms", [_percentile(lat, 99)])
        rates = []
        for _ in range(sizes.celery_rate_repeats):
            rates.append(_celery_rate(noop, sizes.celery_rate_n))
        _add(
            rec,
            CELERY,
            case,
            f"round trips/s c={IN_FLIGHT}",
            "1/s",
            rates,
            f"{sizes.celery_rate_n} calls, {IN_FLIGHT} in flight (sliding window)",
        )
    except Exception:
        tail = worker_log.read_text(errors="replace")[-1500:] if worker_log.exists() else ""
        log(f"Celery worker output (tail):\n{tail}")
        raise
    finally:
        _stop(worker)
        with contextlib.suppress(Exception), app.connection_for_write() as conn:
            channel = conn.default_channel
            channel.queue_delete(queue)
            channel.exchange_delete(queue)
        app.close()


def _celery_rate(noop: Any, n: int) -> float:
    inflight: deque[Any] = deque()
    sent = 0
    t0 = clock()
    while sent < n or inflight:
        while sent < n and len(inflight) < IN_FLIGHT:
            inflight.append(noop.delay())
            sent += 1
        inflight.popleft().get(timeout=30)
    return n / (clock() - t0)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Kill the worker's process group.

    Nothing is in flight by then and its queue is deleted next; an idle solo worker
    waits seconds (TERM ~10 s, QUIT over 5 s) before it acts on a shutdown signal.
    """
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


# --------------------------------------------------------------------------- the scenario


def missing_peers() -> dict[str, str]:
    """Which peers cannot run here, with the reason (they come with the nox bench session)."""
    out = {}
    for name in ("dbos", "celery"):
        try:
            __import__(name)
        except ImportError as exc:
            out[name] = (
                f"{name} is not installed here ({exc}); the nox bench session "
                "installs it (./dev bench)"
            )
    return out


def zag_scenario(
    rec: Recorder,
    plan: Plan,
    sizes: Sizes | None = None,
    parts: tuple[str, ...] = ("dbos", "celery"),
    databases: tuple[str, ...] = ("sqlite", "postgres"),
) -> None:
    """PEERS (run.py calls it with the zag Recorder; every side's rows go there)."""
    if sizes is None:
        sizes = QUICK if plan == Plan.quick() else FULL
    missing = missing_peers()
    with tempfile.TemporaryDirectory(prefix="zag-peers-") as workdir:
        if "dbos" in parts:
            if "dbos" in missing:
                _add(rec, DBOS_ASYNC, "all", "per step", "µs", None, missing["dbos"])
            else:
                durable(rec, sizes, workdir, databases)
        if "celery" in parts:
            if "celery" in missing:
                _add(rec, CELERY, "all", "round trip p50", "ms", None, missing["celery"])
            else:
                log("zag: PEERS Celery")
                try:
                    celery(rec, sizes, workdir)
                except Exception as exc:
                    traceback.print_exc(file=sys.stderr)
                    _add(
                        rec,
                        CELERY,
                        "remote no-op round trip",
                        "round trip p50",
                        "ms",
                        None,
                        f"failed: {type(exc).__name__}: {exc}"[:300],
                    )


# --------------------------------------------------------------------------- printing


LEGEND = (
    "  zag: serial = S4's flow of no-op atoms (max_concurrency=1), per atom; concurrent = S8's "
    "engines under one TaskGroup",
    "  DBOS: one subprocess per case; async = async workflow/steps (asyncio.gather for the "
    "concurrent case), sync = plain functions (DBOS.start_workflow on its thread pool)",
    "  SQLite: one file per case in one temporary folder; WAL + synchronous=NORMAL on both sides "
    "(zag's pragmas; DBOS's file switched to them)",
    "  PostgreSQL: a fresh database per case on 127.0.0.1:5432, dropped after; each side's "
    "default pool (DBOS 20 connections, zag 5 + 10 overflow)",
    "  floor = one raw single-row commit (sqlite3 module WAL; asyncpg BEGIN/INSERT/COMMIT); "
    "zag adv. = DBOS time / zag time (per step) or zag rate / DBOS rate",
    "  TaskFlow (S4) = TaskFlow's S4 per task in the same run, when S4 ran (its own N: 200, "
    "50 with --quick)",
)


def _fmt(stats: Stats | None) -> str:
    if stats is None:
        return "n/a"
    x = stats.median
    text = f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"
    if stats.n > 1:
        lo, hi = (f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}" for v in (stats.min, stats.max))
        text += f" [{lo}-{hi}]"
    return text


def _advantage(metric: str, zag: Stats | None, peer: Stats | None) -> float | None:
    """How many times better zag is than ``peer`` (per step/latency: lower is better)."""
    if zag is None or peer is None or not zag.median or not peer.median:
        return None
    if metric in ("per step", "round trip p50", "round trip p99"):
        return peer.median / zag.median
    return zag.median / peer.median


def print_table(rows: list[Measurement]) -> None:
    """PEERS side by side: one line per (case, metric), zag / DBOS / floor, the advantage."""
    mine = [m for m in rows if m.scenario == SCENARIO]
    if not mine:
        return
    keys: list[tuple[str, str, str]] = []
    by: dict[tuple[str, str, str], dict[str, Measurement]] = {}
    for m in mine:
        key = (m.case, m.metric, m.unit)
        if key not in by:
            keys.append(key)
        by.setdefault(key, {})[m.side] = m
    # TaskFlow's serial persisted figure, when S4 ran in the same run (its own N, R).
    taskflow = {
        m.case: m.stats for m in rows if (m.scenario, m.side, m.metric) == ("S4", PEER, "per task")
    }
    headers = (
        "case",
        "metric",
        "unit",
        "zag",
        DBOS_ASYNC,
        DBOS_SYNC,
        "zag adv. async/sync",
        "floor",
        "TaskFlow (S4)",
        "notes",
    )
    lines = []
    for key in keys:
        sides = by[key]
        if CELERY in sides:
            continue
        z = sides.get(ZAG_SIDE)
        adv = []
        for side in (DBOS_ASYNC, DBOS_SYNC):
            a = _advantage(
                key[1], z.stats if z else None, sides[side].stats if side in sides else None
            )
            adv.append(f"{a:.2g}x" if a is not None else "-")
        target = SERIAL_TARGET if key[1] == "per step" else CONCURRENT_TARGET
        db = key[0].split(":")[0]
        # Per-row notes only say why a figure is missing; what each side does is in LEGEND.
        notes = "; ".join(f"{s}: {m.note}" for s, m in sides.items() if m.stats is None)
        lines.append(
            (
                key[0],
                key[1],
                key[2],
                _fmt(z.stats) if z else "-",
                *(_fmt(sides[s].stats) if s in sides else "-" for s in (DBOS_ASYNC, DBOS_SYNC)),
                f"{' / '.join(adv)} (target >= {target:g}x)",
                _fmt(sides[FLOOR].stats) if FLOOR in sides else "-",
                _fmt(taskflow[db]) if key[1] == "per step" and taskflow.get(db) else "-",
                notes,
            )
        )
    print_columns(
        "PEERS durable workflows: zag vs DBOS Transact (SQLite file in WAL, PostgreSQL 127.0.0.1)",
        headers,
        lines,
    )
    if lines:
        print("\n".join(LEGEND))
        pragmas = sorted(
            {
                m.note.split("; ", 1)[1]
                for m in mine
                if m.side in (DBOS_ASYNC, DBOS_SYNC) and m.stats and "; " in m.note
            }
        )
        for note in pragmas:
            print(f"  DBOS's SQLite engine reports: {note}")
    celery_lines = [
        (k[0], k[1], k[2], _fmt(by[k][CELERY].stats), by[k][CELERY].note)
        for k in keys
        if CELERY in by[k]
    ]
    print_columns(
        "PEERS Celery on RabbitMQ 127.0.0.1:5672 (zag's REMOTE beside it: see the cross table)",
        ("case", "metric", "unit", "Celery", "notes"),
        celery_lines,
    )


def cross_table(rows: list[Measurement]) -> None:
    """zag REMOTE vs Celery vs raw aio-pika, when REMOTE and PEERS ran in the same run."""

    def find(scenario: str, case: str, metric: str, side: str) -> Stats | None:
        for m in rows:
            if (m.scenario, m.case, m.metric, m.side) == (scenario, case, metric, side):
                return m.stats
        return None

    pairs = (
        (
            "round trip p50",
            "ms",
            ("REMOTE", "zag 1 worker, sequential", "round trip p50"),
            "round trip p50",
            ("REMOTE", "raw baseline", "round trip p50"),
        ),
        (
            f"throughput c={IN_FLIGHT}",
            "1/s",
            ("REMOTE", f"zag 64 concurrent flows, 1 worker c={IN_FLIGHT}", "atoms/s"),
            f"round trips/s c={IN_FLIGHT}",
            ("REMOTE", "raw baseline", f"req/reply c={IN_FLIGHT}"),
        ),
    )
    lines = []
    for label, unit, zag_key, celery_metric, raw_key in pairs:
        z = find(*zag_key, ZAG_SIDE)
        c = find(SCENARIO, "remote no-op round trip", celery_metric, CELERY)
        raw = find(*raw_key, ZAG_SIDE)
        if z is None and c is None:
            continue
        if unit == "ms":
            ratio = f"{c.median / z.median:.2g}x" if z and c else "-"
            target = "target: zag p50 below Celery's (> 1x)"
        else:
            ratio = f"{z.median / c.median:.2g}x" if z and c else "-"
            target = "zag: one-atom flows (engine + worker), 64 at once"
        lines.append((label, unit, _fmt(z), _fmt(c), ratio, _fmt(raw), target))
    print_columns(
        "zag REMOTE vs Celery, same RabbitMQ, same run (zag: one-atom flows; "
        "Celery: no-op task, --pool solo)",
        ("figure", "unit", "zag", "Celery", "zag adv.", "raw aio-pika", "notes"),
        lines,
    )


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command")
    child = sub.add_parser("dbos", help="one DBOS case (a subprocess of the scenario)")
    child.add_argument("--url", required=True)
    child.add_argument("--api", choices=("async", "sync"), default="async")
    child.add_argument("--shape", choices=("serial", "concurrent"), default="serial")
    child.add_argument("--n", type=int, default=200)
    child.add_argument("--repeats", type=int, default=1)
    worker = sub.add_parser("celery-worker", help="the Celery worker (a subprocess)")
    worker.add_argument("--queue", required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--serial-n", type=int, default=None)
    parser.add_argument("--concurrent-n", type=int, default=None)
    parser.add_argument(
        "--celery-n", type=int, default=None, help="Celery round trips, sequential and per rate run"
    )
    parser.add_argument(
        "--rounds", type=int, default=None, help="rounds of the serial and the concurrent cases"
    )
    parser.add_argument("--parts", default="dbos,celery")
    parser.add_argument("--databases", default="sqlite,postgres")
    parser.add_argument("--no-sync", action="store_true", help="DBOS's async API only")
    args = parser.parse_args(argv)
    if args.command == "dbos":
        print(json.dumps(dbos_child(args)))
        return 0
    if args.command == "celery-worker":
        celery_worker(args.queue)
        return 0
    import dataclasses

    sizes = QUICK if args.quick else FULL
    if args.serial_n:
        sizes = dataclasses.replace(sizes, serial_n=args.serial_n)
    if args.concurrent_n:
        sizes = dataclasses.replace(sizes, concurrent_n=args.concurrent_n)
    if args.celery_n:
        sizes = dataclasses.replace(sizes, celery_seq_n=args.celery_n, celery_rate_n=args.celery_n)
    if args.rounds:
        sizes = dataclasses.replace(
            sizes, serial_repeats=args.rounds, concurrent_repeats=args.rounds
        )
    if args.no_sync:
        sizes = dataclasses.replace(sizes, dbos_sync=False)
    rec = Recorder(ZAG_SIDE)
    zag_scenario(
        rec,
        Plan(),
        sizes,
        tuple(p.strip() for p in args.parts.split(",")),
        tuple(d.strip() for d in args.databases.split(",")),
    )
    print_table(rec.rows)
    return 1 if any(m.stats is None for m in rec.rows) else 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    sys.exit(main())
