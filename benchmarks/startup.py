"""Scenario STARTUP: what a process pays before its first flow has run.

Issue 15's start-up targets, each measured as the wall time of fresh
interpreters (median of at least 7, the cases interleaved round by round so
the machine's load drifts over all of them alike) minus the median of
``python -c pass``:

- ``import zag_async``: at most 30 ms net (the public names load on first use);
- import, ``zag.connect`` on an existing SQLite file (schema current) and run
  a three-atom flow of no-op ``async def`` tasks to its end: at most 150 ms net;
- the same on a new SQLite file (the schema is created), and on ``memory://``
  (what the engine costs without a storage driver), for comparison, with
  ``import asyncio`` alone: the floor no asyncio library goes under.

Each child also reports, from inside, its own phases (import of asyncio and
of the zag_async names the flow uses, connect, run, close) and which heavy
optional packages it loaded.

The figures are warm: the children may write bytecode caches
(``PYTHONDONTWRITEBYTECODE`` is dropped from their environment) and one
unmeasured run of each case goes first, so a run compiles nothing. The
children import the same zag_async as this process (its tree goes first on
``PYTHONPATH``, and they run in a temporary directory, not in a checkout whose
zag_async ``-c`` would put first), so ``run.py --baseline`` compares revisions
here too.

``python benchmarks/startup.py [--runs N]`` runs it alone and prints its rows.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import Plan, Recorder, check, clock

import zag_async

SCENARIO = "STARTUP"
PACKAGE = Path(zag_async.__file__).resolve()  # the children must import this very file
MIN_RUNS = 7
SQLITE_URL = "sqlite+aiosqlite:///{path}"
TARGETS_MS = {"import zag_async": 30.0, "first flow, SQLite file": 150.0}
# Imported by a child only when it needs them: their presence says what a case paid for.
HEAVY = (
    "sqlalchemy",
    "aiosqlite",
    "asyncpg",
    "networkx",
    "anyio",
    "aio_pika",
    "aiozk",
    "opentelemetry",
    "pydantic",
)

# The first flow: import, connect, run three atoms, close; phases on stdout as JSON.
FIRST_FLOW = r"""
import sys, time
t0 = time.perf_counter()
import asyncio
import zag_async as zag
from zag_async import connect, linear, run, task  # load what the flow uses
t1 = time.perf_counter()

@zag.task(provides="a")
async def one() -> int:
    return 1

@zag.task(provides="b")
async def two(a: int) -> int:
    return a + 1

@zag.task(provides="c")
async def three(b: int) -> int:
    return b + 1

async def main(url):
    marks = []
    async with zag.connect(url) as backend:
        marks.append(time.perf_counter())
        results = await zag.run(zag.linear("first", one, two, three), backend=backend)
        marks.append(time.perf_counter())
    assert results["c"] == 3, results
    return marks

t2, t3 = asyncio.run(main(sys.argv[1]))
t4 = time.perf_counter()
heavy = sorted(m for m in HEAVY if m in sys.modules)
print(json.dumps({"import": t1 - t0, "connect": t2 - t1, "run": t3 - t2, "close": t4 - t3,
                  "heavy": heavy, "package": zag.__file__}))
"""


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _child_env() -> dict[str, str]:
    """This environment, bytecode caches allowed, this process's zag_async first on the path."""
    tree = str(PACKAGE.parent.parent)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    inherited = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([tree, *inherited])
    return env


def _first_flow_code() -> str:
    return f"import json\nHEAVY = {HEAVY!r}\n" + FIRST_FLOW


class _Case:
    """One kind of fresh process: how to start it, and the times and phases of its runs."""

    def __init__(self, label: str, argv: Callable[[], list[str]]) -> None:
        self.label = label
        self.argv = argv  # called per run: a case may need a new file each time
        self.walls: list[float] = []
        self.cpus: list[float] = []  # user + system time of the child
        self.phases: list[dict[str, Any]] = []

    def once(self, env: dict[str, str], cwd: Path) -> None:
        cmd = [sys.executable, *self.argv()]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = clock()
        proc = subprocess.run(
            cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=120, check=False
        )
        wall = clock() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"{self.label}: exit {proc.returncode}: {tail}")
        self.walls.append(wall)
        self.cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        out = proc.stdout.strip().splitlines()
        if out and out[-1].startswith("{"):
            phases = json.loads(out[-1])
            check(
                Path(phases["package"]).resolve() == PACKAGE,
                f"{self.label}: the child imported {phases['package']}, not {PACKAGE}",
            )
            self.phases.append(phases)

    def clear(self) -> None:
        self.walls.clear()
        self.cpus.clear()
        self.phases.clear()


def measure(runs: int, tmp: Path) -> list[_Case]:
    """Run every case `runs` times, interleaved, after one unmeasured run of each."""
    env = _child_env()
    code = _first_flow_code()
    existing = SQLITE_URL.format(path=tmp / "existing.db")
    fresh = itertools.count()
    cases = [
        _Case("interpreter alone", lambda: ["-c", "pass"]),
        _Case("import zag_async", lambda: ["-c", "import zag_async"]),
        _Case("import asyncio (floor)", lambda: ["-c", "import asyncio"]),
        _Case("first flow, SQLite file", lambda: ["-c", code, existing]),
        _Case(
            "first flow, new SQLite file",
            lambda: ["-c", code, SQLITE_URL.format(path=tmp / f"new-{next(fresh)}.db")],
        ),
        _Case("first flow, memory://", lambda: ["-c", code, "memory://"]),
    ]
    for case in cases:  # warm-up: bytecode caches written, the existing file created
        case.once(env, tmp)
        case.clear()
    for r in range(runs):
        for case in cases[::-1] if r % 2 else cases:
            case.once(env, tmp)
    return cases


def record(rec: Recorder, cases: list[_Case]) -> None:
    alone = cases[0]
    base, base_cpu = statistics.median(alone.walls), statistics.median(alone.cpus)
    rec.add(
        SCENARIO,
        alone.label,
        "wall",
        "ms",
        [w * 1e3 for w in alone.walls],
        f"`{sys.executable} -c pass`, subtracted from the rows below",
    )
    rec.add(SCENARIO, alone.label, "cpu (user+sys)", "ms", [c * 1e3 for c in alone.cpus])
    for case in cases[1:]:
        target = TARGETS_MS.get(case.label)
        net = [(w - base) * 1e3 for w in case.walls]
        note = f"target <= {target:.0f} ms" if target else ""
        if target:
            note += f" ({'met' if statistics.median(net) <= target else 'NOT met'} by the median)"
        rec.add(SCENARIO, case.label, "net of interpreter", "ms", net, note)
        rec.add(
            SCENARIO,
            case.label,
            "net cpu (user+sys)",
            "ms",
            [(c - base_cpu) * 1e3 for c in case.cpus],
            "steadier than wall time on a busy machine",
        )
        if not case.phases:
            continue
        for phase in ("import", "connect", "run", "close"):
            what = "asyncio + zag_async" if phase == "import" else ""
            rec.add(
                SCENARIO,
                case.label,
                f"  {phase} (inside)",
                "ms",
                [p[phase] * 1e3 for p in case.phases],
                what,
            )
        heavy = sorted({m for p in case.phases for m in p["heavy"]})
        rec.add(
            SCENARIO, case.label, "  heavy packages loaded", "", None, ", ".join(heavy) or "none"
        )


def zag_scenario(rec: Recorder, plan: Plan) -> None:
    runs = max(MIN_RUNS, plan.import_runs)
    log(f"{rec.side}: STARTUP, {runs} fresh processes per case")
    with tempfile.TemporaryDirectory(prefix="zag-startup-") as tmp:
        record(rec, measure(runs, Path(tmp)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=MIN_RUNS, help="fresh processes per case")
    args = parser.parse_args(argv)
    rec = Recorder("zag")
    with tempfile.TemporaryDirectory(prefix="zag-startup-") as tmp:
        record(rec, measure(args.runs, Path(tmp)))
    for m in rec.rows:
        s = m.stats
        figure = "" if s is None else f"{s.median:8.1f} [{s.min:.1f}-{s.max:.1f}] {m.unit}"
        print(f"{m.case:<30} {m.metric:<24} {figure:<28} {m.note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
