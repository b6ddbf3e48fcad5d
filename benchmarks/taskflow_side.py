"""Scenarios S1-S6 implemented with TaskFlow, the peer library.

TaskFlow is imported lazily inside each function so that ``run.py`` can be
imported (and ``--help`` shown) where TaskFlow is not installed.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

from common import Phases, Plan, Recorder, check, clock, measure

# SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; the scenario asks for psycopg2.
S4_PG_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/taskflow_bench"


def version() -> str:
    from common import dist_version

    return dist_version("taskflow")


# --------------------------------------------------------------------------- tasks


def _task_classes() -> dict[str, type]:
    """Define the task classes once TaskFlow is importable."""
    from taskflow import task

    class Step(task.Task):  # type: ignore[misc]
        def execute(self, x: int) -> int:
            return x + 1

    class RevertibleStep(task.Task):  # type: ignore[misc]
        reverted: list[str]

        def execute(self, x: int) -> int:
            return x + 1

        def revert(self, x: int, **kwargs: Any) -> None:
            self.reverted.append(self.name)

    class Boom(task.Task):  # type: ignore[misc]
        raised_at: list[float]

        def execute(self, x: int) -> int:
            self.raised_at.append(clock())
            raise RuntimeError("t200 fails on purpose")

        def revert(self, x: int, **kwargs: Any) -> None:
            pass

    class Sleeper(task.Task):  # type: ignore[misc]
        def execute(self) -> None:
            time.sleep(0.01)

    class Root(task.Task):  # type: ignore[misc]
        def execute(self) -> int:
            return 1

    class Join(task.Task):  # type: ignore[misc]
        def execute(self, a: int, b: int) -> int:
            return 1

    class Flaky(task.Task):  # type: ignore[misc]
        calls: list[int]
        failures: int

        def execute(self) -> int:
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


def _cls(name: str) -> type:
    if not _CLASSES:
        _CLASSES.update(_task_classes())
    return _CLASSES[name]


def _linear(n: int) -> Any:
    from taskflow.patterns import linear_flow

    step = _cls("Step")
    flow = linear_flow.Flow("s1")
    flow.add(
        *(step(name=f"t{i}", rebind={"x": f"v{i - 1}"}, provides=f"v{i}") for i in range(1, n + 1))
    )
    return flow


def _prepare(flow: Any, **load_kwargs: Any) -> Any:
    """TaskFlow's 'prepare' phase: load + compile + prepare + validate."""
    import taskflow.engines

    engine = taskflow.engines.load(flow, **load_kwargs)
    engine.compile()
    engine.prepare()
    engine.validate()
    return engine


# --------------------------------------------------------------------------- S1


def s1_once(n: int, **load_kwargs: Any) -> Phases:
    t0 = clock()
    flow = _linear(n)
    t1 = clock()
    engine = _prepare(flow, store={"v0": 0}, engine="serial", **load_kwargs)
    t2 = clock()
    engine.run()
    t3 = clock()
    check(engine.storage.fetch(f"v{n}") == n, f"S1: v{n} != {n}")
    total = t3 - t1
    return {
        "build": t1 - t0,
        "prepare": t2 - t1,
        "run": t3 - t2,
        "total": total,
        "per_task_us": total / n * 1e6,
        "run_per_task_us": (t3 - t2) / n * 1e6,
    }


def report_s1(rec: Recorder, scenario: str, case: str, st: dict[str, Any], note: str = "") -> None:
    rec.add(scenario, case, "total", "ms", _scaled(st["total"], 1e3), note)
    rec.add(scenario, case, "build", "ms", _scaled(st["build"], 1e3))
    rec.add(scenario, case, "prepare", "ms", _scaled(st["prepare"], 1e3))
    rec.add(scenario, case, "run", "ms", _scaled(st["run"], 1e3))
    rec.add(scenario, case, "per task", "µs", st["per_task_us"])
    rec.add(scenario, case, "run per task", "µs", st["run_per_task_us"])


def _scaled(stats: Any, factor: float) -> Any:
    from common import Stats

    return Stats(stats.median * factor, stats.min * factor, stats.max * factor, stats.n)


def s1(rec: Recorder, plan: Plan) -> None:
    for size in plan.s1_peer:
        st = measure(lambda n=size.n: s1_once(n), repeats=size.repeats, warmup=size.warmup)
        note = f"R={size.repeats}" + ("" if size.warmup else ", warmed by the smaller sizes")
        report_s1(rec, "S1", f"N={size.n}", st, note)


# --------------------------------------------------------------------------- S2


def s2(rec: Recorder, plan: Plan) -> None:
    import concurrent.futures

    from taskflow.patterns import unordered_flow

    n = plan.s2_n
    sleeper = _cls("Sleeper")

    def once(**load_kwargs: Any) -> Phases:
        flow = unordered_flow.Flow("s2")
        flow.add(*(sleeper(name=f"s{i}") for i in range(n)))
        t0 = clock()
        engine = _prepare(flow, engine="parallel", **load_kwargs)
        engine.run()
        t1 = clock()
        check(engine.storage.get_flow_state() == "SUCCESS", "S2: flow did not succeed")
        return {"total": t1 - t0}

    default_workers = (os.cpu_count() or 1) * 5  # futurist's default, used by TaskFlow
    for workers, case, owned_kwargs in (
        (default_workers, f"conc={default_workers}", {}),
        (64, "conc=64", {"max_workers": 64}),
    ):
        ideal = f"ideal 10 ms, bound {math.ceil(n / workers) * 10} ms"
        st = measure(lambda kw=owned_kwargs: once(**kw), repeats=plan.s2_repeats)
        rec.add(
            "S2",
            f"{case} owned pool",
            "total",
            "ms",
            _scaled(st["total"], 1e3),
            ideal,
            match_case=case,
        )
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
            st = measure(lambda p=pool: once(executor=p), repeats=plan.s2_repeats)
        rec.add(
            "S2",
            f"{case} shared pool",
            "total",
            "ms",
            _scaled(st["total"], 1e3),
            ideal,
            match_case=case,
        )
    rec.missing("S2", "unbounded", "total", "ms", "TaskFlow needs one thread per task")


# --------------------------------------------------------------------------- S3

S3_LAYERS = 20
S3_WIDTH = 100


def s3(rec: Recorder, plan: Plan) -> None:
    import taskflow.engines
    from taskflow.patterns import graph_flow

    root, join = _cls("Root"), _cls("Join")

    def once() -> Phases:
        t0 = clock()
        tasks = [root(name=f"n0_{i}", provides=f"v0_{i}") for i in range(S3_WIDTH)]
        for layer in range(1, S3_LAYERS):
            tasks.extend(
                join(
                    name=f"n{layer}_{i}",
                    provides=f"v{layer}_{i}",
                    rebind={"a": f"v{layer - 1}_{i}", "b": f"v{layer - 1}_{(i + 1) % S3_WIDTH}"},
                )
                for i in range(S3_WIDTH)
            )
        flow = graph_flow.Flow("s3")
        flow.add(*tasks)  # infers the edges from requires/provides
        t1 = clock()
        engine = taskflow.engines.load(flow, engine="serial")
        t2 = clock()
        engine.compile()
        t3 = clock()
        engine.prepare()
        engine.validate()
        t4 = clock()
        engine.run()
        t5 = clock()
        check(engine.storage.fetch(f"v{S3_LAYERS - 1}_0") == 1, "S3: v19_0 != 1")
        n = S3_LAYERS * S3_WIDTH
        return {
            "build": t1 - t0,
            "load": t2 - t1,
            "compile": t3 - t2,
            "prepare+validate": t4 - t3,
            "prepare (load..validate)": t4 - t1,
            "run": t5 - t4,
            "run per task": (t5 - t4) / n * 1e6,
        }

    st = measure(once, repeats=plan.s3_repeats, warmup=plan.s3_warmup)
    note = f"R={plan.s3_repeats}"
    phases = ("build", "prepare (load..validate)", "load", "compile", "prepare+validate", "run")
    for phase in phases:
        rec.add("S3", "N=2000", phase, "s", st[phase], note if phase == "build" else "")
    rec.add("S3", "N=2000", "run per task", "µs", st["run per task"])


# --------------------------------------------------------------------------- S4

S4_WIDE_N = 200


@contextlib.contextmanager
def _sql_backend(url: str) -> Iterator[tuple[Any, float]]:
    """Schema set-up, timed: fetch the backend and run TaskFlow's (alembic) upgrade."""
    from taskflow.persistence import backends

    t0 = clock()
    backend = backends.fetch({"connection": url})
    with contextlib.closing(backend.get_connection()) as conn:
        conn.upgrade()
    schema_s = clock() - t0
    try:
        yield backend, schema_s
    finally:
        backend.close()


def _window(url: str, counters: Any, body: Callable[[Any], dict[str, float]]) -> dict[str, float]:
    """Fetch a backend, run `body(backend)`, close it; count the commits in between.

    A new backend per run, like each run's own engine; its first connection is made
    (and validated) before the timed part starts. Each session's own start-up
    transaction is subtracted (`Counters.net_commits`).
    """
    from accounting import CommitCounter
    from taskflow.persistence import backends

    before = counters.snapshot() if counters is not None else None
    sa0 = CommitCounter.get(url)
    backend = backends.fetch({"connection": url})
    try:
        with contextlib.closing(backend.get_connection()):
            pass
        phases = body(backend)
    finally:
        backend.close()
    phases["sa_commits"] = CommitCounter.get(url) - sa0
    if counters is not None:
        delta = counters.snapshot() - before
        phases.update(
            pg_commits=delta.net_commits, pg_rollbacks=delta.rollbacks, pg_sessions=delta.sessions
        )
    return phases


def _verify(url: str, book: Any, n: int) -> None:
    """The stored logbook, read back through a new backend, says the flow finished."""
    from taskflow import states
    from taskflow.persistence import backends

    backend = backends.fetch({"connection": url})
    try:
        with contextlib.closing(backend.get_connection()) as conn:
            stored = conn.get_logbook(book.uuid)
    finally:
        backend.close()
    (fd,) = list(stored)
    check(fd.state == states.SUCCESS, f"S4: stored flow is {fd.state}")
    # TaskFlow also stores the engine's store as a '_TaskFlow_INJECTOR' atom.
    done = {ad.name for ad in fd if ad.state == states.SUCCESS}
    missing = {f"t{i}" for i in range(1, n + 1)} - done
    check(not missing, f"S4: {len(missing)} of {n} stored tasks are not SUCCESS")


def _per(stats: Any, n: int, minus: float = 0.0) -> Any:
    from common import Stats

    return Stats(
        (stats.median - minus) / n, (stats.min - minus) / n, (stats.max - minus) / n, stats.n
    )


def s4(rec: Recorder, plan: Plan) -> None:
    from accounting import CommitCounter, PgCounters
    from taskflow.persistence import models

    CommitCounter.install()
    pg_url = S4_PG_URL
    if pg_url.startswith("postgresql://"):
        pg_url = "postgresql+psycopg2://" + pg_url.removeprefix("postgresql://")

    n = plan.s4_n
    mem = measure(lambda: s1_once(n), repeats=plan.s4_repeats)
    rec.add("S4", "in-memory", "per task", "µs", mem["per_task_us"], f"S1 N={n}, same process")
    runs = iter(range(10**6))

    def linear_once(url: str, counters: Any) -> Phases:
        book = models.LogBook(f"s4-{next(runs)}")
        phases = _window(url, counters, lambda b: dict(s1_once(n, backend=b, book=book)))
        _verify(url, book, n)
        return phases

    with tempfile.TemporaryDirectory(prefix="zag-bench-") as tmp:
        db = os.path.join(tmp, "s4.db")
        targets: list[tuple[str, str]] = [("sqlite", f"sqlite:///{db}"), ("postgres", pg_url)]
        for label, url in targets:
            counters = None
            try:
                if label == "postgres":
                    counters = PgCounters(url)
                    counters.recreate()
                with _sql_backend(url) as (_, schema_s):
                    pass
                st = measure(lambda u=url, c=counters: linear_once(u, c), repeats=plan.s4_repeats)
                _report(rec, label, st, n, mem["per_task_us"].median, plan.s4_repeats)
                rec.add(
                    "S4",
                    label,
                    "schema_setup",
                    "ms",
                    [schema_s * 1e3],
                    "fetch + upgrade() (alembic) on a new database",
                )
                if counters is not None:
                    _wide(rec, url, counters, plan)
            except Exception as exc:  # report, don't abort the whole bench
                rec.missing("S4", label, "per task", "µs", f"skipped: {type(exc).__name__}: {exc}")
            finally:
                if counters is not None:
                    counters.close()


def _report(
    rec: Recorder, case: str, st: dict[str, Any], n: int, mem_us: float, repeats: int
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
        rec.add("S4", case, "rollbacks per atom (pg_stat)", "xact", _per(st["pg_rollbacks"], n))
    rec.add(
        "S4",
        case,
        "SQLAlchemy COMMITs per atom",
        "xact",
        _per(st["sa_commits"], n),
        "counted by a SQLAlchemy commit event; includes read-only transactions",
    )


def _wide(rec: Recorder, url: str, counters: Any, plan: Plan) -> None:
    """200 no-op tasks in one unordered flow, parallel engine (default pool), persisted."""
    from taskflow.patterns import unordered_flow
    from taskflow.persistence import models

    root = _cls("Root")
    n = S4_WIDE_N

    def body(backend: Any) -> dict[str, float]:
        flow = unordered_flow.Flow("s4w")
        flow.add(*(root(name=f"w{i}") for i in range(n)))
        t0 = clock()
        engine = _prepare(flow, engine="parallel", backend=backend, book=models.LogBook("s4-wide"))
        engine.run()
        t1 = clock()
        check(engine.storage.get_flow_state() == "SUCCESS", "S4 wide: flow did not succeed")
        return {"total": t1 - t0}

    repeats = max(1, plan.s4_repeats - 1)
    wide = measure(lambda: _window(url, counters, body), repeats=repeats, warmup=0)
    case = f"postgres {n}-wide"
    rec.add(
        "S4",
        case,
        "total",
        "ms",
        _scaled(wide["total"], 1e3),
        f"parallel engine, default pool; R={repeats}, no warm-up",
    )
    rec.add("S4", case, "commits (pg_stat)", "xact", wide["pg_commits"])
    rec.add("S4", case, "SQLAlchemy COMMITs", "xact", wide["sa_commits"])


# --------------------------------------------------------------------------- S5


def s5(rec: Recorder, plan: Plan) -> None:
    from taskflow import states
    from taskflow.patterns import linear_flow

    n = plan.s5_n
    step, boom = _cls("RevertibleStep"), _cls("Boom")

    def once() -> Phases:
        reverted: list[str] = []
        raised_at: list[float] = []
        flow = linear_flow.Flow("s5")
        for i in range(1, n):
            t = step(name=f"t{i}", rebind={"x": f"v{i - 1}"}, provides=f"v{i}")
            t.reverted = reverted
            flow.add(t)
        last = boom(name=f"t{n}", rebind={"x": f"v{n - 1}"}, provides=f"v{n}")
        last.raised_at = raised_at
        flow.add(last)
        t0 = clock()
        engine = _prepare(flow, store={"v0": 0}, engine="serial")
        try:
            engine.run()
        except RuntimeError:
            t2 = clock()
        else:
            raise AssertionError("S5: the engine did not re-raise")
        check(engine.storage.get_flow_state() == states.REVERTED, "S5: flow not REVERTED")
        expected = [f"t{i}" for i in range(n - 1, 0, -1)]
        check(reverted == expected, f"S5: reverts out of order ({len(reverted)} happened)")
        t1 = raised_at[0]
        return {
            "total": t2 - t0,
            "forward": t1 - t0,
            "revert_phase": t2 - t1,
            "revert per task": (t2 - t1) / (n - 1) * 1e6,
        }

    st = measure(once, repeats=plan.s5_repeats)
    rec.add("S5", f"N={n}", "total", "ms", _scaled(st["total"], 1e3))
    rec.add("S5", f"N={n}", "forward", "ms", _scaled(st["forward"], 1e3))
    rec.add("S5", f"N={n}", "revert_phase", "ms", _scaled(st["revert_phase"], 1e3))
    rec.add("S5", f"N={n}", "revert per task", "µs", st["revert per task"])


# --------------------------------------------------------------------------- S6


def s6(rec: Recorder, plan: Plan) -> None:
    from taskflow import retry
    from taskflow.patterns import linear_flow

    flaky = _cls("Flaky")

    def once(failures: int) -> Phases:
        t = flaky(name="flaky")
        t.calls, t.failures = [], failures
        flow = linear_flow.Flow("s6", retry=retry.Times(5, name="times", provides="attempt"))
        flow.add(t)
        t0 = clock()
        engine = _prepare(flow, engine="serial")
        engine.run()
        t1 = clock()
        check(len(t.calls) == failures + 1, f"S6: task called {len(t.calls)} times")
        check(engine.storage.fetch("attempt") == failures + 1, "S6: controller attempt mismatch")
        return {"total": t1 - t0}

    st4 = measure(lambda: once(4), repeats=plan.s6_repeats)
    st0 = measure(lambda: once(0), repeats=plan.s6_repeats)
    rec.add("S6", "4 failures", "total", "ms", _scaled(st4["total"], 1e3), "5 calls, attempt 5")
    rec.add("S6", "0 failures", "total", "ms", _scaled(st0["total"], 1e3))
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
