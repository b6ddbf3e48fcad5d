"""Shared measurement harness for the zag-async vs TaskFlow benchmarks.

Both sides report :class:`Measurement` rows; ``run.py`` lines them up by
scenario, case and metric and prints the zag/TaskFlow ratio. Timings are never
asserted: a failed correctness check marks the run invalid instead.
"""

from __future__ import annotations

import gc
import importlib.metadata
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

ZAG = "zag"
PEER = "taskflow"

clock = time.perf_counter


@dataclass(frozen=True)
class Stats:
    """Median, min and max of one metric over the measured runs."""

    median: float
    min: float
    max: float
    n: int

    @classmethod
    def of(cls, values: Iterable[float]) -> Stats:
        vals = list(values)
        if not vals:
            raise ValueError("no values to summarise")
        return cls(statistics.median(vals), min(vals), max(vals), len(vals))


@dataclass(frozen=True)
class Measurement:
    """One reported figure: ``stats`` is None when ``note`` says why it is missing.

    ``match_case`` lets a row of one side be compared with a differently named
    case of the other (TaskFlow's owned and shared pools both face zag's single
    figure at the same concurrency).
    """

    side: str
    scenario: str
    case: str
    metric: str
    unit: str
    stats: Stats | None
    note: str = ""
    match_case: str | None = None
    lower_is_better: bool = True


@dataclass
class Recorder:
    """Collects measurements for one side of the comparison."""

    side: str
    rows: list[Measurement] = field(default_factory=list)

    def add(
        self,
        scenario: str,
        case: str,
        metric: str,
        unit: str,
        values: Iterable[float] | Stats | None,
        note: str = "",
        *,
        match_case: str | None = None,
    ) -> None:
        stats = values if isinstance(values, Stats) or values is None else Stats.of(values)
        self.rows.append(
            Measurement(self.side, scenario, case, metric, unit, stats, note, match_case)
        )

    def missing(self, scenario: str, case: str, metric: str, unit: str, note: str) -> None:
        self.add(scenario, case, metric, unit, None, note)


class CheckFailed(AssertionError):
    """A scenario's correctness check failed: the run does not count."""


def check(condition: bool, message: str) -> None:
    """Raise :class:`CheckFailed` unless ``condition`` holds (never used for timings)."""
    if not condition:
        raise CheckFailed(message)


Phases = Mapping[str, float]


def measure(run_once: Callable[[], Phases], *, repeats: int, warmup: int = 1) -> dict[str, Stats]:
    """Run ``run_once`` ``warmup`` times unmeasured, then ``repeats`` times.

    ``run_once`` builds fresh objects, times its own phases and returns them as
    ``{phase: value}``. The garbage collector is collected before each run and
    stays enabled during it.
    """
    for _ in range(warmup):
        gc.collect()
        run_once()
    samples: dict[str, list[float]] = {}
    for _ in range(repeats):
        gc.collect()
        for phase, value in run_once().items():
            samples.setdefault(phase, []).append(value)
    return {phase: Stats.of(values) for phase, values in samples.items()}


def maxrss_kib() -> int:
    """Peak resident set size of this process so far, in KiB (Linux units)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def dist_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def environment() -> dict[str, str]:
    """Facts that make a result comparable with another machine's."""
    load = os.getloadavg()
    return {
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "cpu_count": str(os.cpu_count()),
        "loadavg": " ".join(f"{x:.2f}" for x in load),
        "zag-async": dist_version("zag-async"),
        "taskflow": dist_version("taskflow"),
        "networkx": dist_version("networkx"),
        "anyio": dist_version("anyio"),
        "SQLAlchemy": dist_version("SQLAlchemy"),
        "executable": sys.executable,
    }


@dataclass(frozen=True)
class Size:
    """One problem size with its own repeat and warm-up counts."""

    n: int
    repeats: int
    warmup: int = 1


@dataclass(frozen=True)
class Plan:
    """How much of each scenario to run; ``quick()`` is for smoke runs."""

    s1_peer: tuple[Size, ...] = (Size(100, 7), Size(200, 7), Size(1000, 3, warmup=0))
    s1_zag: tuple[Size, ...] = (
        Size(100, 7),
        Size(200, 7),
        Size(1000, 5),
        Size(10_000, 3),
        Size(100_000, 1, warmup=0),
    )
    s2_n: int = 200
    s2_repeats: int = 5
    s3_repeats: int = 3
    s3_warmup: int = 1
    s4_n: int = 200
    s4_repeats: int = 3  # TaskFlow: ~6 s per persisted run
    s4_repeats_zag: int = 7  # zag: ~0.3 s per persisted run
    s5_n: int = 200
    s5_repeats: int = 7
    s6_repeats: int = 21  # one run is ~1 ms: more repeats steady the derived per-retry figure
    s7_peer: tuple[int, ...] = (1000,)
    s7_zag: tuple[int, ...] = (1000, 10_000, 100_000)
    import_runs: int = 10
    jobs_n: int = 1000  # JOBS: no-op jobs per case
    jobs_raw_n: int = 1000  # JOBS: raw create+delete pairs per loop run
    jobs_raw_repeats: int = 3
    jobs_max_jobs: tuple[int, ...] = (1, 8, 32)
    waits_latency_n: int = 200  # WAITS: flows signalled one at a time
    waits_many_n: int = 100_000  # WAITS: waiting flows at once, per backend
    waits_timer_n: int = 60  # WAITS: timers, half sleep and half wait_for(timeout=)
    waits_timer_first: float = 3.0  # WAITS: seconds from the first start to the first deadline
    waits_timer_spread: float = 6.0  # WAITS: the deadlines spread evenly over this
    s8_sizes: tuple[int, ...] = (100, 1000, 10_000)  # S8: concurrent three-atom flows

    @classmethod
    def quick(cls) -> Plan:
        return cls(
            s1_peer=(Size(100, 3), Size(200, 1, warmup=0)),
            s1_zag=(Size(100, 3), Size(200, 3), Size(1000, 3), Size(10_000, 1, warmup=0)),
            s2_repeats=2,
            s3_repeats=1,
            s3_warmup=0,
            s4_n=50,
            s4_repeats=1,
            s4_repeats_zag=1,
            s5_repeats=3,
            s6_repeats=3,
            s7_peer=(200,),
            s7_zag=(1000, 10_000),
            import_runs=3,
            jobs_n=200,
            jobs_raw_n=400,
            jobs_raw_repeats=1,
            jobs_max_jobs=(1, 8),
            waits_latency_n=50,
            waits_many_n=2_000,
            waits_timer_n=20,
            waits_timer_first=2.0,
            waits_timer_spread=2.0,
            s8_sizes=(100, 1000),
        )


def print_columns(title: str, headers: Sequence[str], lines: Sequence[Sequence[str]]) -> None:
    """Print ``lines`` under ``== title`` as left-aligned columns (nothing when empty)."""
    if not lines:
        return
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(headers)]
    print(f"\n== {title}")
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    print("  ".join("-" * w for w in widths))
    for line in lines:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())


# --------------------------------------------------------------------------- PostgreSQL

#: The server's own database, from which scratch databases are made and dropped.
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


async def pg_admin(sql: str) -> None:
    """One statement on the admin database (CREATE/DROP DATABASE cannot run in the target)."""
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def fresh_pg(prefix: str) -> str:
    """A new, empty database named after `prefix`, this process and a random tag;
    its zag URL (drop it with `drop_pg`)."""
    import uuid

    name = f"zag_bench_{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    await pg_admin(f'CREATE DATABASE "{name}"')
    return f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"


async def drop_pg(url: str) -> None:
    """Drop the database `url` names, closing whatever sessions it still has."""
    await pg_admin(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
