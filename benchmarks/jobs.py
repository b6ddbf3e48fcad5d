"""Scenario JOBS: job boards on ZooKeeper and conductors, beside the raw ZooKeeper rate.

What is measured (N no-op jobs per case; each job's flow is one async no-op task):

- the physical floor: a sequential loop of create+delete pairs through aiozk
  (and 8 such loops at once) on the same server, in the same run;
- zag's ZooKeeper board with 1 and 4 conductors, jobs pre-posted (post rate,
  then the claim+run+consume rate once the conductors start) or posted while
  the conductors run (end-to-end rate), `max_jobs` 1/8/32 for one conductor;
  conductors in this process (one event loop) and as subprocesses;
- how many ZooKeeper requests and watch events each job costs (aiozk's
  `ZKClient.send` and `Session.event_dispatch` are counted in this process);
- the TaskFlow peer: `taskflow.jobs.backends.impl_zookeeper` on kazoo, the same
  post / claim / consume loop and a BlockingConductor running the same no-op
  flow, when kazoo and taskflow are installed.

The SQL boards (SQLite, PostgreSQL) are measured first in the same run, by
``jobs_sql.sql_scenario`` (their own floor: the board's claim statement).

Every run uses a fresh ZooKeeper root (``/zag-bench/<uuid>``) deleted afterwards.
Persistence is ``memory://`` in-process; subprocess conductors cannot share a
memory backend, so they use PostgreSQL (``PG_URL``; skipped when unreachable).

Also a small CLI: ``python benchmarks/jobs.py conductor ...`` is the subprocess
conductor the scenario spawns; ``python benchmarks/jobs.py profile ...`` runs one
in-process case under cProfile and prints the top functions.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import Plan, Recorder, Stats, check, clock

HERE = Path(__file__).resolve().parent
ZK_SERVERS = "127.0.0.1:2181"
BENCH_ROOT = "/zag-bench"
PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/zag_bench"
FACTORY = "jobs:noop_flow"  # importable from benchmarks/ (run.py and the subprocesses)
SCENARIO = "JOBS"


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the job's flow


def noop_flow() -> Any:
    """The job factory: a flow of one async no-op task."""
    import zag_async as zag

    @zag.task
    async def noop() -> None:
        return None

    return zag.linear("noop-job", noop)


# --------------------------------------------------------------------------- counting


class ZkCounter:
    """Counts aiozk requests (by type) and watch events in this process."""

    requests: collections.Counter[str] = collections.Counter()
    events: collections.Counter[str] = collections.Counter()
    _installed = False

    @classmethod
    def install(cls) -> None:
        if cls._installed:
            return
        import aiozk
        from aiozk import session as zk_session

        send = aiozk.ZKClient.send
        dispatch = zk_session.Session.event_dispatch

        async def counted_send(self: Any, request: Any) -> Any:
            name = type(request).__name__.removesuffix("Request")
            if name == "Transaction":
                name = f"Multi({len(request.requests)})"
            cls.requests[name] += 1
            return await send(self, request)

        def counted_dispatch(self: Any, event: Any) -> Any:
            cls.events[str(getattr(event, "type", "?"))] += 1
            return dispatch(self, event)

        aiozk.ZKClient.send = counted_send  # type: ignore[method-assign]
        zk_session.Session.event_dispatch = counted_dispatch  # type: ignore[method-assign]
        cls._installed = True

    @classmethod
    def snapshot(cls) -> tuple[collections.Counter[str], collections.Counter[str]]:
        return collections.Counter(cls.requests), collections.Counter(cls.events)


def _per_job(before: tuple[Any, Any], after: tuple[Any, Any], n: int) -> dict[str, Any]:
    req = after[0] - before[0]
    ev = after[1] - before[1]
    return {
        "requests": sum(req.values()) / n,
        "events": sum(ev.values()) / n,
        "by_type": {k: round(v / n, 2) for k, v in req.most_common()},
    }


def _fmt_by_type(by_type: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in by_type.items())


# --------------------------------------------------------------------------- ZooKeeper helpers


def _new_root() -> str:
    return f"{BENCH_ROOT}/{uuid.uuid4().hex[:12]}"


async def _zk_client() -> Any:
    import aiozk

    client = aiozk.ZKClient(ZK_SERVERS, session_timeout=10)
    async with asyncio.timeout(15):
        await client.start()
    return client


async def _delete_tree(client: Any, path: str) -> int:
    """Delete `path` and everything under it (children concurrently); returns nodes deleted."""
    from aiozk import exc as zk_exc

    try:
        children = await client.get_children(path)
    except zk_exc.NoNode:
        return 0
    counts = await asyncio.gather(*(_delete_tree(client, f"{path}/{c}") for c in children))
    with contextlib.suppress(zk_exc.NoNode):
        await client.delete(path, force=True)
    return 1 + sum(counts)


async def remove_root(root: str) -> int:
    client = await _zk_client()
    try:
        return await _delete_tree(client, root)
    finally:
        await client.close()


async def zk_reachable() -> str | None:
    try:
        client = await _zk_client()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    await client.close()
    return None


# --------------------------------------------------------------------------- raw floor


async def raw_pairs(n: int, loops: int, *, wrapped: bool = False) -> dict[str, float]:
    """`loops` concurrent loops doing n/loops create+delete pairs each; seconds in total.

    With `wrapped`, every call goes through zag's ZkSession.call (deadline + retries).
    """
    root = _new_root()
    client = await _zk_client()
    session: Any = None
    try:
        await client.ensure_path(root)
        call: Callable[..., Any]
        if wrapped:
            from zag_async.jobs.zksession import ZkSession

            session = ZkSession(ZK_SERVERS, root)
            await session.start()
            call = session.call
            zk = session.client
            base = ""
        else:

            async def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
                return await fn(*args, **kwargs)

            zk = client
            base = root
        per_loop = n // loops

        async def loop(k: int) -> None:
            for i in range(per_loop):
                path = f"{base}/p{k}-{i}"
                await call(zk.create, path, b"x")
                await call(zk.delete, path, True)

        t0, c0 = clock(), time.process_time()
        await asyncio.gather(*(loop(k) for k in range(loops)))
        total = clock() - t0
        cpu = time.process_time() - c0
        return {"total": total, "pairs": per_loop * loops, "cpu": cpu}
    finally:
        if session is not None:
            await session.aclose()
        with contextlib.suppress(Exception):
            await _delete_tree(client, root)
        await client.close()


# --------------------------------------------------------------------------- zag, in-process


async def zag_inprocess(
    n: int,
    conductors: int,
    max_jobs: int,
    mode: str,
    persistence: str = "memory://",
    profiler: Any = None,
) -> dict[str, Any]:
    """Post n jobs and run them with `conductors` Conductor objects in this event loop.

    mode "pre": post all, then start the conductors; "live": conductors idle first.
    """
    import zag_async as zag

    ZkCounter.install()
    root = _new_root()
    url = f"zookeeper://{ZK_SERVERS}{root}"
    kinds: collections.Counter[str] = collections.Counter()
    done = asyncio.Event()
    last_consumed = [0.0]

    def on_event(event: Any) -> None:
        kinds[event.kind] += 1
        if event.kind == "consumed":
            last_consumed[0] = clock()
            if kinds["consumed"] >= n:
                done.set()

    out: dict[str, Any] = {}
    try:
        async with contextlib.AsyncExitStack() as stack:
            backend = await stack.enter_async_context(zag.connect(persistence))
            boards = [
                await stack.enter_async_context(zag.jobs.connect(url, backend=backend))
                for _ in range(conductors)
            ]
            cons = [
                zag.Conductor(
                    b, backend=backend, name=f"c{i}", max_jobs=max_jobs, listeners=[on_event]
                )
                for i, b in enumerate(boards)
            ]
            tasks: list[asyncio.Task[None]] = []

            def start() -> None:
                tasks.extend(asyncio.create_task(c.run()) for c in cons)

            async def post_all() -> float:
                # The poster has its own board (and ZooKeeper session), closed afterwards.
                async with zag.jobs.connect(url, backend=backend) as poster:
                    t = clock()
                    for i in range(n):
                        await poster.post(f"noop-{i}", FACTORY)
                    return clock() - t

            s0 = ZkCounter.snapshot()
            if mode == "pre":
                out["post_s"] = await post_all()
                s1 = ZkCounter.snapshot()
                if profiler is not None:
                    profiler.enable()  # the conductors' phase only
                t0, c0 = clock(), time.process_time()
                start()
                await _wait_done(done, list(tasks), n)
                out["run_s"] = last_consumed[0] - t0
                out["cpu_s"] = time.process_time() - c0
                if profiler is not None:
                    profiler.disable()
                s2 = ZkCounter.snapshot()
                out["zk_post"] = _per_job(s0, s1, n)
                out["zk"] = _per_job(s1, s2, n)
            else:
                start()
                await asyncio.sleep(0.3)  # let them arm their watches (outside the clock)
                s0 = ZkCounter.snapshot()
                t0, c0 = clock(), time.process_time()
                out["post_s"] = await post_all()
                await _wait_done(done, list(tasks), n)
                out["run_s"] = last_consumed[0] - t0
                out["cpu_s"] = time.process_time() - c0
                out["zk"] = _per_job(s0, ZkCounter.snapshot(), n)
            for c in cons:
                c.stop()
            await asyncio.gather(*tasks)
            # jobs() serves the watch-fed cache, which may lag another board's last
            # consume by one watch event: count from a fresh listing.
            await boards[0].refresh()  # type: ignore[attr-defined]
            out["remaining"] = len(await boards[0].jobs())
    finally:
        out["deleted_nodes"] = await remove_root(root)
    out["kinds"] = dict(kinds)
    return out


async def _wait_done(done: asyncio.Event, tasks: list[asyncio.Task[None]], n: int) -> None:
    """Wait for n consumed jobs; fail early if a conductor died."""
    waiter = asyncio.ensure_future(done.wait())
    try:
        async with asyncio.timeout(max(120.0, n * 0.2)):
            while not done.is_set():
                finished, _ = await asyncio.wait([waiter, *tasks], return_when="FIRST_COMPLETED")
                for t in finished:
                    if t is not waiter and t.exception() is not None:
                        raise t.exception()  # type: ignore[misc]
                if waiter in finished:
                    break
                tasks[:] = [t for t in tasks if not t.done()]
    finally:
        waiter.cancel()


# --------------------------------------------------------------------------- zag, subprocesses


async def conductor_main(args: argparse.Namespace) -> None:
    """A conductor in its own process: 'ready', wait for 'go', one line per consumed job."""
    import zag_async as zag

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    out = sys.stdout
    kinds: collections.Counter[str] = collections.Counter()

    def on_event(event: Any) -> None:
        kinds[event.kind] += 1
        if event.kind == "consumed":
            out.write("c\n")
            out.flush()

    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
    async with (
        zag.connect(args.persistence) as backend,
        zag.jobs.connect(args.board, backend=backend) as board,
    ):
        conductor = zag.Conductor(
            board, backend=backend, name=args.name, max_jobs=args.max_jobs, listeners=[on_event]
        )
        out.write("ready\n")
        out.flush()
        line = await reader.readline()
        if line.strip() != b"go":
            return
        if profiler is not None:
            profiler.enable()
        c0 = time.process_time()
        task = asyncio.create_task(conductor.run())
        await reader.readline()  # "stop" or EOF
        conductor.stop()
        await task
        kinds["cpu_ms"] = round((time.process_time() - c0) * 1e3)
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.profile)
    out.write("done " + json.dumps(dict(kinds)) + "\n")
    out.flush()


async def conductor_processes(
    url: str,
    persistence: str,
    n: int,
    conductors: int,
    max_jobs: int,
    mode: str,
    post_all: Callable[[], Any],
    profile_dir: str | None = None,
) -> dict[str, Any]:
    """Run `conductors` conductor processes on board `url` until n jobs are consumed.

    `post_all()` posts the n jobs (returns seconds): before "go" in mode "pre",
    after it in mode "live". Returns post_s, run_s, kinds, per_conductor, cpu_s.
    """
    procs: list[asyncio.subprocess.Process] = []
    out: dict[str, Any] = {}
    consumed = 0
    done = asyncio.Event()
    last = [0.0]
    try:
        for i in range(conductors):
            cmd = [
                sys.executable,
                str(HERE / "jobs.py"),
                "conductor",
                "--board",
                url,
                "--persistence",
                persistence,
                "--max-jobs",
                str(max_jobs),
                "--name",
                f"c{i}",
            ]
            if profile_dir:
                cmd += ["--profile", os.path.join(profile_dir, f"c{i}.prof")]
            procs.append(
                await asyncio.create_subprocess_exec(
                    *cmd,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    cwd=str(HERE),
                )
            )
        for p in procs:
            assert p.stdout is not None
            async with asyncio.timeout(60):
                line = await p.stdout.readline()
            check(line.strip() == b"ready", f"conductor did not start: {line!r}")

        summaries: list[dict[str, int]] = []

        async def follow(p: asyncio.subprocess.Process) -> None:
            nonlocal consumed
            assert p.stdout is not None
            async for raw in p.stdout:
                line = raw.decode().strip()
                if line == "c":
                    consumed += 1
                    last[0] = clock()
                    if consumed >= n:
                        done.set()
                elif line.startswith("done "):
                    summaries.append(json.loads(line[5:]))

        followers = [asyncio.create_task(follow(p)) for p in procs]

        def go() -> None:
            for p in procs:
                assert p.stdin is not None
                p.stdin.write(b"go\n")

        if mode == "pre":
            out["post_s"] = await post_all()
            t0 = clock()
            go()
        else:
            go()
            await asyncio.sleep(0.3)  # let them open their watches (outside the clock)
            t0 = clock()
            out["post_s"] = await post_all()
        async with asyncio.timeout(max(120.0, n * 0.2)):
            await done.wait()
        out["run_s"] = last[0] - t0
        for p in procs:
            assert p.stdin is not None
            p.stdin.write(b"stop\n")
            await p.stdin.drain()
            p.stdin.close()
        async with asyncio.timeout(60):
            await asyncio.gather(*followers)
            for p in procs:
                await p.wait()
        kinds: collections.Counter[str] = collections.Counter()
        for s in summaries:
            kinds.update(s)
        out["kinds"] = dict(kinds)
        out["per_conductor"] = [s.get("consumed", 0) for s in summaries]
        out["cpu_s"] = sum(s.get("cpu_ms", 0) for s in summaries) / 1e3
        out["cpu_where"] = "conductor processes, from go to stop"
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
    return out


async def zag_subprocess(
    n: int,
    conductors: int,
    max_jobs: int,
    mode: str,
    persistence: str,
    profile_dir: str | None = None,
) -> dict[str, Any]:
    """Conductors as subprocesses (each its own event loop and ZooKeeper session)."""
    import zag_async as zag

    root = _new_root()
    url = f"zookeeper://{ZK_SERVERS}{root}"
    out: dict[str, Any] = {}
    try:
        async with zag.connect(persistence) as backend:

            async def post_all() -> float:
                # Its own board (and ZooKeeper session), closed once every job is posted.
                async with zag.jobs.connect(url, backend=backend) as poster:
                    t = clock()
                    for i in range(n):
                        await poster.post(f"noop-{i}", FACTORY)
                    return clock() - t

            out = await conductor_processes(
                url, persistence, n, conductors, max_jobs, mode, post_all, profile_dir
            )
            async with zag.jobs.connect(url, backend=backend) as board:
                out["remaining"] = len(await board.jobs())
    finally:
        out["deleted_nodes"] = await remove_root(root)
    return out


# --------------------------------------------------------------------------- TaskFlow peer


def taskflow_available() -> str | None:
    try:
        import kazoo  # noqa: F401
        import taskflow.jobs.backends.impl_zookeeper  # noqa: F401
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _kazoo_version_shim() -> None:
    """kazoo's server_version() asks `envi`, a four-letter word our ZooKeeper does not allow
    (whitelist: ruok,srvr,stat,mntr), and TaskFlow's board refuses to connect without it.
    Fall back to parsing `srvr` ("Zookeeper version: 3.8.0-...")."""
    import re

    from kazoo.client import KazooClient

    if getattr(KazooClient, "_zag_bench_shim", False):
        return
    original = KazooClient.server_version

    def server_version(self: Any, retries: int = 3) -> Any:
        try:
            return original(self, retries=1)
        except Exception:
            text = self.command(b"srvr")
            found = re.search(r"version: (\d+)\.(\d+)\.(\d+)", text)
            if not found:
                raise
            return tuple(int(x) for x in found.groups())

    KazooClient.server_version = server_version  # type: ignore[method-assign]
    KazooClient._zag_bench_shim = True  # type: ignore[attr-defined]


def _tf_board(root: str, persistence: Any = None) -> Any:
    from taskflow.jobs import backends as job_backends

    _kazoo_version_shim()
    board = job_backends.fetch(
        "bench", {"board": "zookeeper", "hosts": ZK_SERVERS, "path": root}, persistence=persistence
    )
    board.connect()
    return board


def _tf_cleanup(root: str) -> None:
    """Delete the root and the siblings TaskFlow's board makes beside it (.trash, .entities)."""
    from kazoo.client import KazooClient

    client = KazooClient(hosts=ZK_SERVERS)
    client.start(timeout=15)
    try:
        for path in (root, f"{BENCH_ROOT}/.trash", f"{BENCH_ROOT}/.entities"):
            client.delete(path, recursive=True)
    finally:
        client.stop()
        client.close()


def tf_raw_pairs(n: int) -> float:
    """The same sequential create+delete loop through kazoo (TaskFlow's client)."""
    from kazoo.client import KazooClient

    root = _new_root()
    client = KazooClient(hosts=ZK_SERVERS)
    client.start(timeout=15)
    try:
        client.ensure_path(root)
        t0 = clock()
        for i in range(n):
            path = f"{root}/p{i}"
            client.create(path, b"x")
            client.delete(path)
        return clock() - t0
    finally:
        client.delete(root, recursive=True)
        client.stop()
        client.close()


def tf_board_loop(n: int) -> dict[str, float]:
    """TaskFlow: post n jobs, then claim + consume each one (no flow run)."""

    root = _new_root()
    board = _tf_board(root)
    try:
        t0 = clock()
        for i in range(n):
            board.post(f"noop-{i}", book=None, details={"store": {}})
        post_s = clock() - t0
        # The board learns of jobs through its watches: wait until it lists them all.
        deadline = time.monotonic() + 60
        while board.job_count < n and time.monotonic() < deadline:
            time.sleep(0.01)
        check(board.job_count == n, f"TaskFlow board lists {board.job_count} of {n} jobs")
        t1 = clock()
        done = 0
        for job in list(board.iterjobs(only_unclaimed=True, ensure_fresh=False)):
            board.claim(job, "bench")
            board.consume(job, "bench")
            done += 1
        run_s = clock() - t1
        check(done == n, f"TaskFlow consumed {done} of {n}")
        return {"post_s": post_s, "run_s": run_s}
    finally:
        board.close()
        _tf_cleanup(root)


def tf_conductor(n: int, mode: str) -> dict[str, float]:
    """TaskFlow: a BlockingConductor (serial engine) over n posted no-op flows."""
    import threading

    from taskflow import engines
    from taskflow.conductors import backends as conductor_backends
    from taskflow.persistence import backends as persistence_backends
    from taskflow.persistence import models

    root = _new_root()
    persistence = persistence_backends.fetch({"connection": "memory://"})
    with contextlib.closing(persistence.get_connection()) as conn:
        conn.upgrade()
    board = _tf_board(root, persistence)
    poster = _tf_board(root, persistence)
    consumed = 0
    done = threading.Event()
    last = [0.0]
    lock = threading.Lock()

    def on_consumed(state: Any, details: Any) -> None:
        nonlocal consumed
        with lock:
            consumed += 1
            last[0] = clock()
            if consumed >= n:
                done.set()

    conductor = conductor_backends.fetch(
        "blocking",
        "bench-conductor",
        board,
        persistence=persistence,
        engine="serial",
        wait_timeout=0.05,
    )
    conductor.notifier.register("job_consumed", on_consumed)
    thread = threading.Thread(target=conductor.run, daemon=True)

    def post_all() -> float:
        t = clock()
        for i in range(n):
            book = models.LogBook(f"book-{i}")
            flow_detail = models.FlowDetail(f"noop-{i}", uuid=uuid.uuid4().hex)
            book.add(flow_detail)
            with contextlib.closing(persistence.get_connection()) as conn:
                conn.save_logbook(book)
            engines.save_factory_details(flow_detail, tf_noop_flow, (), {}, persistence=persistence)
            poster.post(f"noop-{i}", book=book, details={"store": {}})
        return clock() - t

    out: dict[str, float] = {}
    try:
        if mode == "pre":
            out["post_s"] = post_all()
            t0 = clock()
            thread.start()
        else:
            thread.start()
            time.sleep(0.3)
            t0 = clock()
            out["post_s"] = post_all()
        check(done.wait(max(300.0, n * 0.5)), f"TaskFlow conductor consumed {consumed} of {n}")
        out["run_s"] = last[0] - t0
    finally:
        conductor.stop()
        thread.join(30)
        board.close()
        poster.close()
        _tf_cleanup(root)
    return out


def tf_noop_flow() -> Any:
    """TaskFlow's job factory: a linear flow of one no-op task."""
    from taskflow import task
    from taskflow.patterns import linear_flow

    class Noop(task.Task):
        def execute(self) -> None:
            return None

    return linear_flow.Flow("noop-job").add(Noop("noop"))


# --------------------------------------------------------------------------- reporting


def _rate_rows(
    rec: Recorder,
    case: str,
    n: int,
    r: dict[str, Any],
    raw_ms: float,
    *,
    mode: str,
    note: str = "",
    ratio: bool = True,
) -> None:
    run_s = r["run_s"]
    post_s = r["post_s"]
    rec.add(
        SCENARIO,
        case,
        "post",
        "jobs/s",
        [n / post_s],
        f"one poster, sequential; {post_s * 1e3 / n:.2f} ms/job",
    )
    what = (
        "claim+run+consume after posting"
        if mode == "pre"
        else "end to end: first post to last consumed"
    )
    ms_job = run_s * 1e3 / n
    rec.add(SCENARIO, case, "completed", "jobs/s", [n / run_s], f"{what}; {note}" if note else what)
    rec.add(SCENARIO, case, "per job", "ms", [ms_job])
    if "cpu_s" in r:
        where = r.get(
            "cpu_where",
            "this process (conductors"
            + (")" if mode == "pre" else " + poster)")
            + " during the run",
        )
        rec.add(SCENARIO, case, "CPU per job", "ms", [r["cpu_s"] * 1e3 / n], where)
    if ratio and raw_ms > 0:
        rec.add(
            SCENARIO,
            case,
            "rate / raw pair rate",
            "%",
            [raw_ms / ms_job * 100],
            f"{raw_ms:.3f} ms per raw create+delete pair; target >= 50%",
        )


def _zk_rows(rec: Recorder, case: str, r: dict[str, Any]) -> None:
    zk = r.get("zk")
    if not zk:
        return
    label = "conductors" if "zk_post" in r else "post+run"
    rec.add(
        SCENARIO,
        case,
        f"ZK requests/job ({label})",
        "req",
        [zk["requests"]],
        _fmt_by_type(zk["by_type"]) + f"; {zk['events']:.1f} watch events/job",
    )
    post = r.get("zk_post")
    if post:
        rec.add(
            SCENARIO,
            case,
            "ZK requests/job (poster)",
            "req",
            [post["requests"]],
            _fmt_by_type(post["by_type"]) + f"; {post['events']:.1f} watch events/job",
        )


def _check_result(r: dict[str, Any], n: int, case: str) -> None:
    kinds = r.get("kinds", {})
    check(kinds.get("consumed", 0) == n, f"{case}: consumed {kinds} of {n}")
    check(r.get("remaining", 0) == 0, f"{case}: {r.get('remaining')} jobs left on the board")


def zag_scenario(rec: Recorder, plan: Plan) -> None:
    """The zag side of JOBS (run.py calls it with the zag Recorder): SQL boards, then ZooKeeper."""
    from jobs_sql import sql_scenario

    sql_scenario(rec, plan)
    n = plan.jobs_n
    why = zk_reachable_sync()
    if why:
        rec.missing(SCENARIO, "all", "raw pair", "ms", f"skipped: ZooKeeper at {ZK_SERVERS}: {why}")
        return
    try:
        import aiozk  # noqa: F401
    except ImportError as exc:
        rec.missing(
            SCENARIO,
            "all",
            "raw pair",
            "ms",
            f"skipped: {exc} (the bench session must install zag-async[zookeeper])",
        )
        return

    # The floor: create+delete pairs, sequential and 8 loops at once.
    raw = [asyncio.run(raw_pairs(plan.jobs_raw_n, 1)) for _ in range(plan.jobs_raw_repeats)]
    raw_ms = [r["total"] * 1e3 / r["pairs"] for r in raw]
    raw_med = Stats.of(raw_ms).median
    rec.add(
        SCENARIO,
        "raw create+delete, 1 loop",
        "per pair",
        "ms",
        raw_ms,
        f"aiozk: {plan.jobs_raw_n} x create+delete, sequential; the floor",
    )
    rec.add(SCENARIO, "raw create+delete, 1 loop", "pairs/s", "1/s", [1e3 / x for x in raw_ms])
    rec.add(
        SCENARIO,
        "raw create+delete, 1 loop",
        "CPU per pair",
        "ms",
        [r["cpu"] * 1e3 / r["pairs"] for r in raw],
        "this process (aiozk + asyncio)",
    )
    raw8 = [asyncio.run(raw_pairs(plan.jobs_raw_n, 8)) for _ in range(plan.jobs_raw_repeats)]
    rec.add(
        SCENARIO,
        "raw create+delete, 8 loops",
        "pairs/s",
        "1/s",
        [r["pairs"] / r["total"] for r in raw8],
        f"8 concurrent loops of {plan.jobs_raw_n // 8} pairs, one session",
    )
    wrapped = [
        asyncio.run(raw_pairs(plan.jobs_raw_n, 1, wrapped=True))
        for _ in range(plan.jobs_raw_repeats)
    ]
    rec.add(
        SCENARIO,
        "raw via ZkSession.call",
        "per pair",
        "ms",
        [r["total"] * 1e3 / r["pairs"] for r in wrapped],
        "same loop through zag's deadline+retry wrapper",
    )

    cases: list[tuple[str, Callable[[], Any], str, str]] = []
    for max_jobs in plan.jobs_max_jobs:
        cases.append(
            (
                f"1 cond max_jobs={max_jobs}, pre-posted",
                lambda m=max_jobs: zag_inprocess(n, 1, m, "pre"),
                "pre",
                "in-process",
            )
        )
    cases.append(
        ("1 cond max_jobs=1, live", lambda: zag_inprocess(n, 1, 1, "live"), "live", "in-process")
    )
    cases.append(
        (
            "4 cond in-process, pre-posted",
            lambda: zag_inprocess(n, 4, 1, "pre"),
            "pre",
            "4 conductors (max_jobs=1) on one event loop, 4 ZK sessions",
        )
    )
    cases.append(
        (
            "4 cond in-process, live",
            lambda: zag_inprocess(n, 4, 1, "live"),
            "live",
            "4 conductors (max_jobs=1) on one event loop",
        )
    )
    for case, make, mode, note in cases:
        log(f"zag: JOBS {case} (memory://, N={n})")
        try:
            r = asyncio.run(make())
            _check_result(r, n, case)
        except Exception as exc:
            rec.missing(
                SCENARIO, case, "completed", "jobs/s", f"failed: {type(exc).__name__}: {exc}"
            )
            continue
        _rate_rows(rec, case, n, r, raw_med, mode=mode, note=note)
        _zk_rows(rec, case, r)

    # PostgreSQL persistence: in-process for comparison, then conductors as subprocesses.
    pg_why = pg_prepare()
    if pg_why:
        rec.missing(SCENARIO, "postgres", "completed", "jobs/s", f"skipped: {pg_why}")
        return
    pg_cases: list[tuple[str, Callable[[], Any], str, str]] = [
        (
            "pg: 1 cond in-process, pre-posted",
            lambda: zag_inprocess(n, 1, 1, "pre", PG_URL),
            "pre",
            "persistence PostgreSQL",
        ),
        (
            "pg: 1 cond subprocess, pre-posted",
            lambda: zag_subprocess(n, 1, 1, "pre", PG_URL),
            "pre",
            "1 conductor process",
        ),
        (
            "pg: 4 cond subprocesses, pre-posted",
            lambda: zag_subprocess(n, 4, 1, "pre", PG_URL),
            "pre",
            "4 conductor processes",
        ),
        (
            "pg: 4 cond subprocesses, live",
            lambda: zag_subprocess(n, 4, 1, "live", PG_URL),
            "live",
            "4 conductor processes",
        ),
    ]
    for case, make, mode, note in pg_cases:
        log(f"zag: JOBS {case} (N={n})")
        try:
            r = asyncio.run(make())
            _check_result(r, n, case)
        except Exception as exc:
            rec.missing(
                SCENARIO, case, "completed", "jobs/s", f"failed: {type(exc).__name__}: {exc}"
            )
            continue
        if "per_conductor" in r:
            note += f"; jobs per conductor {r['per_conductor']}"
        _rate_rows(rec, case, n, r, raw_med, mode=mode, note=note)
        _zk_rows(rec, case, r)


def zk_reachable_sync() -> str | None:
    try:
        import aiozk  # noqa: F401
    except ImportError:
        return None  # reported by the caller
    return asyncio.run(zk_reachable())


def pg_prepare() -> str | None:
    """Recreate the PostgreSQL database and its schema; the reason when it cannot."""
    try:
        from accounting import PgCounters

        import zag_async as zag

        counters = PgCounters(PG_URL)
        try:
            counters.recreate()
        finally:
            counters.close()
        asyncio.run(zag.persistence.upgrade(PG_URL))
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc).strip()}"
    return None


def peer_scenario(rec: Recorder, plan: Plan) -> None:
    """The TaskFlow side of JOBS: kazoo board loop and a BlockingConductor."""
    n = plan.jobs_n
    why = taskflow_available()
    if why:
        rec.missing(
            SCENARIO,
            "all",
            "completed",
            "jobs/s",
            f"skipped: {why} (install kazoo in the bench session)",
        )
        return
    import logging

    logging.getLogger("kazoo").setLevel(logging.WARNING)
    raw = [tf_raw_pairs(plan.jobs_raw_n) for _ in range(plan.jobs_raw_repeats)]
    raw_ms = [t * 1e3 / plan.jobs_raw_n for t in raw]
    raw_med = Stats.of(raw_ms).median
    rec.add(
        SCENARIO,
        "raw create+delete, 1 loop",
        "per pair",
        "ms",
        raw_ms,
        f"kazoo: {plan.jobs_raw_n} x create+delete, sequential",
    )
    log(f"taskflow: JOBS board loop (N={n})")
    try:
        r = tf_board_loop(n)
        rec.add(
            SCENARIO,
            "TF board: post, then claim+consume",
            "post",
            "jobs/s",
            [n / r["post_s"]],
            "kazoo; no flow record, no flow run",
        )
        rec.add(
            SCENARIO,
            "TF board: post, then claim+consume",
            "claim+consume",
            "jobs/s",
            [n / r["run_s"]],
            f"{r['run_s'] * 1e3 / n:.2f} ms/job, one loop, no conductor",
        )
    except Exception as exc:
        rec.missing(
            SCENARIO,
            "TF board: post, then claim+consume",
            "claim+consume",
            "jobs/s",
            f"failed: {type(exc).__name__}: {exc}",
        )
    for mode, case in (
        ("pre", "1 cond max_jobs=1, pre-posted"),
        ("live", "1 cond max_jobs=1, live"),
    ):
        log(f"taskflow: JOBS conductor {mode} (N={n})")
        try:
            r = tf_conductor(n, mode)
        except Exception as exc:
            rec.missing(
                SCENARIO, case, "completed", "jobs/s", f"failed: {type(exc).__name__}: {exc}"
            )
            continue
        _rate_rows(
            rec,
            case,
            n,
            r,
            raw_med,
            mode=mode,
            note="BlockingConductor, serial engine, memory persistence",
        )


# --------------------------------------------------------------------------- CLI


class PySpy:
    """A profiler hook sampling this process with py-spy between enable() and disable()."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.proc: Any = None

    def enable(self) -> None:
        import subprocess

        self.proc = subprocess.Popen(
            [
                "py-spy",
                "record",
                "-p",
                str(os.getpid()),
                "-r",
                "250",
                "-f",
                "raw",
                "-o",
                self.path,
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)  # let it attach before the clock starts

    def disable(self) -> None:
        import signal

        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(30)

    def summary(self, top: int = 25) -> str:
        """Share of samples whose stack passes through each (file:function), top first."""
        total = 0
        incl: collections.Counter[str] = collections.Counter()
        with open(self.path) as fh:
            for line in fh:
                stack, _, count = line.rstrip().rpartition(" ")
                frames = {
                    f.split(" (")[0] + " " + f.split(" (")[1].split(":")[0].rsplit("/", 1)[-1]
                    for f in stack.split(";")
                    if " (" in f
                }
                total += int(count)
                for f in frames:
                    incl[f] += int(count)
        lines = [f"{total} samples; inclusive share:"]
        lines += [f"  {100 * c / total:5.1f}%  {f}" for f, c in incl.most_common(top)]
        return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("conductor", help="(internal) a subprocess conductor")
    c.add_argument("--board", required=True)
    c.add_argument("--persistence", required=True)
    c.add_argument("--max-jobs", type=int, default=1)
    c.add_argument("--name", default="c")
    c.add_argument("--profile", default=None)
    p = sub.add_parser(
        "profile",
        help="one in-process case under cProfile (pre: the "
        "conductors' phase only; live: everything)",
    )
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--conductors", type=int, default=1)
    p.add_argument("--max-jobs", type=int, default=1)
    p.add_argument("--mode", choices=("pre", "live"), default="pre")
    p.add_argument("--persistence", default="memory://")
    p.add_argument("--out", default=None, help="write the pstats file here")
    p.add_argument(
        "--py-spy",
        default=None,
        metavar="PATH",
        help="sample with py-spy instead of cProfile (collapsed stacks to PATH)",
    )
    p.add_argument("--top", type=int, default=40)
    args = parser.parse_args(argv)
    if args.cmd == "conductor":
        asyncio.run(conductor_main(args))
        return 0
    import cProfile
    import pstats

    if args.py_spy:
        spy = PySpy(args.py_spy)
        r = asyncio.run(
            zag_inprocess(args.n, args.conductors, args.max_jobs, "pre", args.persistence, spy)
        )
        print(f"run: {r['run_s'] * 1e3 / args.n:.3f} ms/job; {spy.summary()}")
        return 0
    prof = cProfile.Profile()
    if args.mode == "live":
        prof.enable()
    r = asyncio.run(
        zag_inprocess(
            args.n,
            args.conductors,
            args.max_jobs,
            args.mode,
            args.persistence,
            None if args.mode == "live" else prof,
        )
    )
    if args.mode == "live":
        prof.disable()
    print(json.dumps({k: v for k, v in r.items()}, indent=1, default=str))
    print(
        f"run: {r['run_s'] * 1e3 / args.n:.3f} ms/job, post: {r['post_s'] * 1e3 / args.n:.3f}"
        f" ms/job"
    )
    if args.out:
        prof.dump_stats(args.out)
    stats = pstats.Stats(prof)
    stats.sort_stats("cumulative").print_stats(args.top)
    stats.sort_stats("tottime").print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
