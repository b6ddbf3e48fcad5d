"""Benchmark zag-async against TaskFlow (scenarios S1-S7 and import cost).

Run through nox so TaskFlow is installed beside zag-async::

    ./dev bench                      # full run (all but WAITS)
    ./dev bench --quick              # smoke run
    ./dev bench --only S1,S7 --json out.json
    ./dev bench --only-peer          # TaskFlow side only
    ./dev bench -- --only REMOTE     # remote workers on RabbitMQ (127.0.0.1:5672) vs raw aio-pika
    ./dev bench -- --only JOBS       # job boards on ZooKeeper (127.0.0.1:2181) + conductors
    ./dev bench -- --only WAITS      # waiting flows: signal latency, 100k waiting, timer lateness
    ./dev bench -- --only S8         # 100/1,000/10,000 concurrent three-atom flows
    ./dev bench -- --only PEERS      # beside DBOS Transact (SQLite, PostgreSQL) and Celery
    ./dev bench -- --only S1,S4,REMOTE --baseline main   # also zag at another revision

Both libraries run in this one process (S7 and import cost use fresh
subprocesses per library). Results are printed side by side with the
zag/TaskFlow ratio of medians; nothing here asserts a timing.

With ``--baseline REV`` the zag side of each chosen scenario runs instead in
fresh subprocesses, alternately against this tree and against REV's
zag_async (see baseline.py), and a second table sets TaskFlow, baseline zag
and current zag side by side with the current/baseline ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import baseline
from common import (
    PEER,
    ZAG,
    Measurement,
    Plan,
    Recorder,
    Stats,
    dist_version,
    environment,
    print_columns,
)

HERE = Path(__file__).resolve().parent
ALL_SCENARIOS = (
    "S1",
    "S2",
    "S3",
    "S4",
    "S5",
    "S6",
    "S7",
    "S8",
    "JOBS",
    "REMOTE",
    "WAITS",
    "PEERS",
    "IMPORT",
    "STARTUP",
)
#: What a run without --only measures: all but WAITS, whose 100,000 waiting flows per backend
#: take over an hour (`--only WAITS`; `--quick` uses 2,000).
DEFAULT = tuple(s for s in ALL_SCENARIOS if s != "WAITS")
TITLES = {
    "S1": "S1 linear-noop (serial)",
    "S2": "S2 wide-io (200 x 10 ms sleeps)",
    "S3": "S3 graph-compile (20 x 100, inferred edges)",
    "S4": "S4 persisted-linear (N=200 serial; 200-wide unordered on PostgreSQL)",
    "S5": "S5 revert",
    "S6": "S6 retry Times(5)",
    "S7": "S7 memory (fresh process per library)",
    "S8": "S8 many flows at once (N concurrent three-atom flows; memory, SQLite file, PostgreSQL)",
    "JOBS": "JOBS job board on ZooKeeper + conductors (no-op jobs; raw create+delete floor)",
    "REMOTE": "REMOTE workers on RabbitMQ: zag.RemoteExecutor + worker processes vs raw aio-pika",
    "WAITS": "WAITS (S9) waiting flows: signal-to-resume latency, many waiting flows, timer "
    "lateness (SQLite file; PostgreSQL + ZooKeeper board)",
    "PEERS": "PEERS zag beside DBOS Transact and Celery",
    "IMPORT": "Import cost (fresh interpreters, minus `python -c pass`)",
    "STARTUP": "STARTUP import and first flow (fresh interpreters, minus `python -c pass`)",
}


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- sides


def zag_importable() -> str | None:
    """None when zag_async imports, else the reason it does not."""
    try:
        import zag_async  # noqa: F401
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def peer_importable() -> str | None:
    """None when TaskFlow imports, else why the peer side cannot run here."""
    try:
        import taskflow  # noqa: F401
    except Exception as exc:
        return (
            f"TaskFlow is not installed here ({type(exc).__name__}: {exc}); it is installed "
            "only in the nox bench session (./dev bench)"
        )
    return None


def run_side(
    side: str,
    scenarios: dict[str, Callable[[Recorder, Plan], None]],
    wanted: list[str],
    rec: Recorder,
    plan: Plan,
) -> None:
    for name in wanted:
        fn = scenarios.get(name)
        if fn is None:
            continue
        log(f"{side}: {name}")
        t0 = time.perf_counter()
        try:
            fn(rec, plan)
        except Exception as exc:
            traceback.print_exc(file=sys.stderr)
            rec.missing(name, "(error)", "scenario", "", f"failed: {type(exc).__name__}: {exc}")
        log(f"{side}: {name} done in {time.perf_counter() - t0:.1f} s")


def s7(rec: Recorder, lib: str, sizes: tuple[int, ...]) -> None:
    """Peak RSS per size, each in a fresh interpreter."""
    for n in sizes:
        log(f"{rec.side}: S7 N={n}")
        cmd = [sys.executable, str(HERE / "memory.py"), "--lib", lib, "--n", str(n)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
            if proc.returncode != 0:
                tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                raise RuntimeError(f"exit {proc.returncode}: {tail}")
            out = json.loads(proc.stdout.strip().splitlines()[-1])
        except Exception as exc:
            rec.missing("S7", f"N={n}", "per task", "B", f"failed: {exc}")
            continue
        case = f"N={n}"
        rec.add(
            "S7",
            case,
            "per task",
            "B",
            [out["bytes_per_task"]],
            "(peak RSS - after import) / N; RSS = VmHWM",
        )
        for phase in ("import", "build", "prepare", "run"):
            rec.add("S7", case, f"rss after {phase}", "KiB", [out[f"rss_{phase}_kib"]])
        for phase in ("build", "prepare", "run"):
            rec.add("S7", case, phase, "s", [out[f"{phase}_s"]])


def import_cost(rec: Recorder, module: str, runs: int) -> None:
    def wall(code: str) -> list[float]:
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True)
            times.append(time.perf_counter() - t0)
        return times

    log(f"{rec.side}: import cost of {module}")
    try:
        base = statistics.median(wall("pass"))
        times = wall(f"import {module}")
    except subprocess.CalledProcessError as exc:
        rec.missing("IMPORT", module, "import", "ms", f"failed: {exc}")
        return
    rec.add(
        "IMPORT",
        "import",
        "import",
        "ms",
        [(t - base) * 1e3 for t in times],
        f"`import {module}`, baseline {base * 1e3:.1f} ms",
    )


# --------------------------------------------------------------------------- table


def fmt(x: float) -> str:
    ax = abs(x)
    if ax >= 100:
        return f"{x:,.0f}"
    if ax >= 10:
        return f"{x:.1f}"
    if ax >= 0.1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def fmt_stats(s: Stats | None, note: str) -> str:
    if s is None:
        return "-" if not note else "n/a"
    if s.n == 1:
        return fmt(s.median)
    return f"{fmt(s.median)} [{fmt(s.min)}-{fmt(s.max)}]"


def fmt_ratio(z: Stats | None, p: Stats | None) -> str:
    if z is None or p is None or p.median == 0:
        return ""
    r = z.median / p.median
    return f"{r:.3g}x"


def build_rows(rows: list[Measurement], scenario: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    index: dict[tuple[str, str], dict[str, Any]] = {}
    for m in rows:
        if m.scenario != scenario or m.side != ZAG:
            continue
        row = {"case": m.case, "metric": m.metric, "unit": m.unit, ZAG: m, PEER: None}
        index[(m.case, m.metric)] = row
        out.append(row)
    last: dict[str, Any] | None = None
    for m in rows:
        if m.scenario != scenario or m.side != PEER:
            continue
        if m.match_case is not None and (m.match_case, m.metric) in index:
            target = index[(m.match_case, m.metric)]
            row = {"case": m.case, "metric": m.metric, "unit": m.unit, ZAG: target[ZAG], PEER: m}
            target["replaced"] = True
            pos = out.index(target) + 1
            while pos < len(out) and out[pos].get("matched_to") is target:
                pos += 1
            row["matched_to"] = target
            out.insert(pos, row)
        elif (m.case, m.metric) in index and index[(m.case, m.metric)][PEER] is None:
            index[(m.case, m.metric)][PEER] = m
        else:
            # A peer-only row goes right after the previous peer row, keeping its phases together.
            row = {"case": m.case, "metric": m.metric, "unit": m.unit, ZAG: None, PEER: m}
            index[(m.case, m.metric)] = row
            out.insert(out.index(last) + 1 if last is not None else len(out), row)
        last = index.get((m.case, m.metric), last) if m.match_case is None else row
    return [r for r in out if not r.get("replaced")]


def print_table(rows: list[Measurement], scenarios: list[str]) -> None:
    headers = (
        "case",
        "metric",
        "unit",
        "zag-async median [min-max]",
        "TaskFlow median [min-max]",
        "zag/TF",
        "notes",
    )
    for scenario in scenarios:
        if scenario == "PEERS":  # rows of several peers: a table of its own (peers.py)
            import peers

            peers.print_table(rows)
            continue
        table = build_rows(rows, scenario)
        if not table:
            continue
        lines = []
        for r in table:
            z, p = r[ZAG], r[PEER]
            if z is not None and p is not None and z.note and z.note == p.note:
                notes = z.note
            else:
                sides = (("zag", z), ("TF", p))
                notes = "; ".join(f"{who}: {m.note}" for who, m in sides if m and m.note)
            lines.append(
                (
                    r["case"],
                    r["metric"],
                    r["unit"],
                    fmt_stats(z.stats, z.note) if z else "-",
                    fmt_stats(p.stats, p.note) if p else "-",
                    fmt_ratio(z.stats if z else None, p.stats if p else None),
                    notes,
                )
            )
        print_columns(TITLES.get(scenario, scenario), headers, lines)


def print_scaling(rows: list[Measurement]) -> None:
    per_task = {
        m.case: m.stats.median
        for m in rows
        if m.side == ZAG and m.scenario == "S1" and m.metric == "per task" and m.stats
    }
    if per_task:
        print(
            "\nzag-async S1 per-task overhead by N: "
            + ", ".join(f"{case}: {fmt(us)} µs" for case, us in per_task.items())
        )
    mem = {
        m.case: m.stats.median
        for m in rows
        if m.side == ZAG and m.scenario == "S7" and m.metric == "per task" and m.stats
    }
    if mem:
        print(
            "zag-async S7 bytes per task by N: "
            + ", ".join(f"{case}: {fmt(b)} B" for case, b in mem.items())
        )


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats")
    parser.add_argument(
        "--only",
        default="",
        help=f"comma-separated subset of {','.join(ALL_SCENARIOS)} (default: all but WAITS)",
    )
    side = parser.add_mutually_exclusive_group()
    side.add_argument("--only-peer", action="store_true", help="TaskFlow side only")
    side.add_argument("--only-zag", action="store_true", help="zag-async side only")
    parser.add_argument("--json", metavar="PATH", help="also write all figures as JSON")
    parser.add_argument(
        "--pg-url",
        default=None,
        help="PostgreSQL URL for TaskFlow's S4 (the database is dropped and "
        "created; default postgresql+psycopg2://postgres@127.0.0.1:5432/"
        "taskflow_bench)",
    )
    parser.add_argument(
        "--zag-pg-url",
        default=None,
        help="PostgreSQL URL for zag's S4 (the database is dropped and created; "
        "default postgresql+asyncpg://postgres@127.0.0.1:5432/zag_bench)",
    )
    parser.add_argument(
        "--baseline",
        metavar="REV",
        default=None,
        help="also run the zag side against zag_async of git revision REV "
        "(e.g. main, HEAD~1, a sha), interleaved with this tree, and print "
        "current vs baseline",
    )
    parser.add_argument(
        "--current",
        metavar="REV",
        default=None,
        help="with --baseline: measure git revision REV as the current side "
        "instead of this checkout's zag_async (the benchmark code is still "
        "this checkout's)",
    )
    parser.add_argument(
        "--baseline-rounds",
        metavar="N",
        type=int,
        default=3,
        help="runs per revision and scenario with --baseline, order alternating (default 3)",
    )
    # A child of --baseline: zag side only, REMOTE without what-ifs, rows to --json, no table.
    parser.add_argument("--baseline-child", action="store_true", help=argparse.SUPPRESS)
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--"]:  # `./dev bench -- --only S4` hands the separator on
        args = args[1:]
    return parser.parse_args(args)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = Plan.quick() if args.quick else Plan()
    wanted = [s.strip().upper() for s in args.only.split(",") if s.strip()] or list(DEFAULT)
    unknown = sorted(set(wanted) - set(ALL_SCENARIOS))
    if unknown:
        print(f"unknown scenario(s): {', '.join(unknown)}", file=sys.stderr)
        return 2

    compare = args.baseline is not None
    if compare and args.only_peer:
        print("--baseline compares zag sides: it cannot go with --only-peer", file=sys.stderr)
        return 2
    if args.current and not compare:
        print("--current names the other side of a --baseline comparison", file=sys.stderr)
        return 2
    if args.baseline_rounds < 1:
        print("--baseline-rounds must be at least 1", file=sys.stderr)
        return 2

    run_zag = not args.only_peer
    run_peer = not args.only_zag
    zag_missing = zag_importable() if run_zag else "not requested (--only-peer)"
    if run_zag and zag_missing:
        log(f"zag_async does not import ({zag_missing}); running the TaskFlow side only")
        run_zag = False
    if args.baseline_child:
        zag_missing = zag_missing or baseline.check_child_tree()
        if zag_missing:
            log(f"baseline child: {zag_missing}")
            return 2
    peer_missing = peer_importable() if run_peer else "not requested (--only-zag)"
    if run_peer and peer_missing:
        log(f"{peer_missing}: running the zag side only")
        run_peer = False

    stack = contextlib.ExitStack()
    trees: tuple[baseline.Tree, baseline.Tree] | None = None
    if compare and run_zag:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="zag-bench-")))
        try:
            trees = (
                baseline.export(args.baseline, tmp / "baseline"),
                baseline.export(args.current, tmp / "current", "current")
                if args.current
                else baseline.current_tree(),
            )
        except baseline.BaselineError as exc:
            stack.close()
            print(exc, file=sys.stderr)
            return 2
        for tree in trees:
            log(f"{tree.label}: {tree.describe} at {tree.path}")
    with stack:
        return _run(args, plan, wanted, run_zag, run_peer, zag_missing, peer_missing, trees)


def _run(
    args: argparse.Namespace,
    plan: Plan,
    wanted: list[str],
    run_zag: bool,
    run_peer: bool,
    zag_missing: str | None,
    peer_missing: str | None,
    trees: tuple[baseline.Tree, baseline.Tree] | None,
) -> int:
    """Run the sides, print the tables; ``trees`` (baseline, current) puts zag in subprocesses."""
    env_before = environment()
    started = time.perf_counter()
    zag_rec, peer_rec = Recorder(ZAG), Recorder(PEER)

    import jobs
    import many
    import peers
    import waits

    if run_peer:
        import taskflow_side

        taskflow_side.SCENARIOS.setdefault("JOBS", jobs.peer_scenario)
        taskflow_side.SCENARIOS.setdefault("WAITS", waits.peer_scenario)
        taskflow_side.SCENARIOS.setdefault("S8", many.peer_scenario)
        if args.pg_url:
            taskflow_side.S4_PG_URL = args.pg_url
    if run_zag and trees is None:
        import remote
        import zag_side

        zag_side.SCENARIOS.setdefault("REMOTE", remote.zag_scenario)
        zag_side.SCENARIOS.setdefault("JOBS", jobs.zag_scenario)
        zag_side.SCENARIOS.setdefault("WAITS", waits.zag_scenario)
        zag_side.SCENARIOS.setdefault("S8", many.zag_scenario)
        zag_side.SCENARIOS.setdefault("PEERS", peers.zag_scenario)
        remote.COMPARE_ONLY = args.baseline_child
        if args.zag_pg_url:
            jobs.PG_URL = args.zag_pg_url
            zag_side.S4_PG_URL = args.zag_pg_url
    rounds: dict[str, list[list[Measurement]]] = {"baseline": [], "current": []}
    child_args = ["--zag-pg-url", args.zag_pg_url] if args.zag_pg_url else []

    def zag(name: str) -> None:
        """The zag side of one scenario: in this process, or per revision in subprocesses."""
        if trees is not None and name == "PEERS":
            log("PEERS is not run with --baseline: its rows hold several peers, not one zag side")
        elif trees is not None:
            for r in range(args.baseline_rounds):
                for tree in trees[::-1] if r % 2 == 0 else trees:  # current first, then swap
                    rounds[tree.label].append(
                        baseline.run_child(tree, name, quick=args.quick, extra=child_args)
                    )
        elif name == "S7":
            s7(zag_rec, "zag", plan.s7_zag)
        elif name == "IMPORT":
            import_cost(zag_rec, "zag_async", plan.import_runs)
        elif name == "STARTUP":
            import startup

            startup.zag_scenario(zag_rec, plan)
        else:
            run_side(ZAG, zag_side.SCENARIOS, [name], zag_rec, plan)

    # Interleave per scenario so both sides see similar machine load. S4 goes last:
    # TaskFlow's SQL backend leaves ~10^5-10^6 SQLAlchemy schema objects alive per
    # run (fresh MetaData per connection), after which every gc.collect() in this
    # process costs seconds and every later scenario would be slowed by it.
    in_process = [s for s in wanted if s not in ("S4", "S7", "IMPORT", "STARTUP")]
    in_process += [s for s in wanted if s == "S4"]
    for name in in_process:
        # In S4 zag goes first, so TaskFlow's leftovers (above) cannot slow it down.
        zag_first = name == "S4"
        if run_zag and zag_first:
            zag(name)
        if run_peer:
            run_side(PEER, taskflow_side.SCENARIOS, [name], peer_rec, plan)
        if run_zag and not zag_first:
            zag(name)
    if run_zag and trees is None:
        zag_side.close()
    if "S7" in wanted:
        if run_peer:
            s7(peer_rec, "taskflow", plan.s7_peer)
        if run_zag:
            zag("S7")
    if "IMPORT" in wanted:
        if run_peer:
            import_cost(peer_rec, "taskflow.engines", plan.import_runs)
        if run_zag:
            zag("IMPORT")
    if "STARTUP" in wanted and run_zag:  # zag only: TaskFlow's side is IMPORT
        zag("STARTUP")

    elapsed = time.perf_counter() - started
    env_after = environment()
    baseline_rows = baseline.merge(rounds["baseline"])
    zag_rec.rows.extend(baseline.merge(rounds["current"]))
    rows = zag_rec.rows + peer_rec.rows
    if args.baseline_child:  # the parent reads the rows from --json and prints the tables
        return _write_json(args, env_before, env_after, elapsed, rows, [])

    print("\nzag-async vs TaskFlow benchmark" + (" (--quick)" if args.quick else ""))
    for key in (
        "python",
        "platform",
        "cpu_count",
        "zag-async",
        "taskflow",
        "networkx",
        "anyio",
        "SQLAlchemy",
    ):
        print(f"  {key:<11} {env_before[key]}")
    print(f"  {'loadavg':<11} {env_before['loadavg']} (start), {env_after['loadavg']} (end)")
    print(f"  {'elapsed':<11} {elapsed:.0f} s")
    if "JOBS" in wanted:
        print(
            f"  {'aiozk':<11} {dist_version('aiozk')}, kazoo {dist_version('kazoo')}, "
            f"ZooKeeper {jobs.ZK_SERVERS}"
        )
    if "WAITS" in wanted:
        print(
            f"  {'waits':<11} latency N={plan.waits_latency_n} sequential, "
            f"{plan.waits_many_n:,} waiting flows per backend, {plan.waits_timer_n} timers "
            f"per deployment"
        )
    if "REMOTE" in wanted:
        print(f"  {'aio-pika':<11} {dist_version('aio-pika')}, RabbitMQ at 127.0.0.1:5672")
    if "PEERS" in wanted:
        print(f"  {'peers':<11} dbos {dist_version('dbos')}, celery {dist_version('celery')}")
    if zag_missing:
        print(f"  zag-async side not run: {zag_missing}")
    if peer_missing:
        print(f"  TaskFlow side not run: {peer_missing}")
    if trees is not None:
        print(
            f"  zag side    in subprocesses, {args.baseline_rounds} per revision (--baseline): "
            "the current figures below are those runs merged"
        )
    print("  ratio = zag median / TaskFlow median (below 1: zag is faster or smaller)")
    print_table(rows, wanted)
    if "PEERS" in wanted and "REMOTE" in wanted:
        peers.cross_table(rows)
    print_scaling(rows)
    if trees is not None:
        baseline.print_comparison(
            wanted,
            TITLES,
            zag_rec.rows,
            baseline_rows,
            peer_rec.rows,
            trees,
            args.baseline_rounds,
            f"not run: {peer_missing}" if peer_missing else "",
            fmt_stats,
        )
    return _write_json(args, env_before, env_after, elapsed, rows, baseline_rows)


def _write_json(
    args: argparse.Namespace,
    env_before: dict[str, str],
    env_after: dict[str, str],
    elapsed: float,
    rows: list[Measurement],
    baseline_rows: list[Measurement],
) -> int:
    """Write ``--json`` if asked; the exit status is 1 when any scenario failed."""
    if args.json:
        payload: dict[str, Any] = {
            "environment": {"start": env_before, "end": env_after},
            "quick": args.quick,
            "elapsed_s": elapsed,
            "rows": [asdict(m) for m in rows],
        }
        if args.baseline:
            payload["baseline"] = {
                "rev": args.baseline,
                "rounds": args.baseline_rounds,
                "rows": [asdict(m) for m in baseline_rows],
            }
        Path(args.json).write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
        if not args.baseline_child:
            log(f"wrote {args.json}")
    failed = [m for m in rows + baseline_rows if m.case == "(error)"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
