"""S7: peak RSS of one S1 run at size N, in a fresh process per library.

Usage: ``python benchmarks/memory.py --lib zag|taskflow --n 10000``; prints
one JSON object on stdout (``run.py`` reads it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from typing import Any


def rss_kib() -> int:
    """Peak RSS of this process image, in KiB.

    ``getrusage(RUSAGE_SELF).ru_maxrss`` is the scenario's measure, but Linux
    carries the parent's peak across fork+exec into it, so a child of a large
    benchmark process would report the parent's peak. ``VmHWM`` is the same
    high-water mark counted for this image only; use it where /proc has it.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def measure_taskflow(n: int) -> dict[str, Any]:
    import taskflow.engines
    from taskflow import task
    from taskflow.patterns import linear_flow

    class Step(task.Task):  # type: ignore[misc]
        def execute(self, x: int) -> int:
            return x + 1

    out: dict[str, Any] = {"rss_import_kib": rss_kib()}
    t0 = time.perf_counter()
    flow = linear_flow.Flow("s7")
    flow.add(
        *(Step(name=f"t{i}", rebind={"x": f"v{i - 1}"}, provides=f"v{i}") for i in range(1, n + 1))
    )
    t1 = time.perf_counter()
    out["rss_build_kib"] = rss_kib()
    engine = taskflow.engines.load(flow, store={"v0": 0}, engine="serial")
    engine.compile()
    engine.prepare()
    engine.validate()
    t2 = time.perf_counter()
    out["rss_prepare_kib"] = rss_kib()
    engine.run()
    t3 = time.perf_counter()
    out["rss_run_kib"] = rss_kib()
    out["ok"] = engine.storage.fetch(f"v{n}") == n
    out.update(build_s=t1 - t0, prepare_s=t2 - t1, run_s=t3 - t2)
    return out


async def measure_zag(n: int) -> dict[str, Any]:
    import zag_async as zag

    class Step(zag.Task):
        async def execute(self, x: int) -> int:
            return x + 1

    out: dict[str, Any] = {"rss_import_kib": rss_kib()}
    t0 = time.perf_counter()
    flow = zag.linear(
        "s7",
        *(Step(name=f"t{i}", rebind={"x": f"v{i - 1}"}, provides=f"v{i}") for i in range(1, n + 1)),
    )
    t1 = time.perf_counter()
    out["rss_build_kib"] = rss_kib()
    engine = zag.Engine(flow, store={"v0": 0}, max_concurrency=1)
    t2 = time.perf_counter()
    out["rss_prepare_kib"] = rss_kib()
    await engine.run()
    t3 = time.perf_counter()
    out["rss_run_kib"] = rss_kib()
    value = engine.storage.fetch(f"v{n}")
    if asyncio.iscoroutine(value):
        value = await value
    out["ok"] = value == n
    out.update(build_s=t1 - t0, prepare_s=t2 - t1, run_s=t3 - t2)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lib", choices=("zag", "taskflow"), required=True)
    parser.add_argument("--n", type=int, default=10_000)
    args = parser.parse_args()
    out = asyncio.run(measure_zag(args.n)) if args.lib == "zag" else measure_taskflow(args.n)
    peak = max(
        out["rss_import_kib"], out["rss_build_kib"], out["rss_prepare_kib"], out["rss_run_kib"]
    )
    out["ru_maxrss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out["n"] = args.n
    out["lib"] = args.lib
    out["bytes_per_task"] = (peak - out["rss_import_kib"]) * 1024 / args.n
    json.dump(out, sys.stdout)
    print()
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
