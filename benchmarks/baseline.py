"""Measure the zag side against another git revision of this repository, in the same run.

A refactor must not slow zag-async down, and two benchmark sessions run at
different times on a shared machine differ by more than the change being
judged. ``run.py --baseline REV`` therefore exports REV's ``zag_async`` package
(``git archive``, nothing in the repository changes) into a temporary
directory and runs the zag side of each chosen scenario twice per round: once
with ``PYTHONPATH`` at the current tree, once at the export. Both are fresh
``run.py --only-zag`` subprocesses of this very benchmark code, so only the
package differs; the order alternates per round (current first, then baseline
first, ...) so drift in the machine's load hits both alike. Rows of the same
figure from several rounds are merged: median of the medians, min of the mins,
max of the maxes.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from common import ZAG, Measurement, Stats, print_columns

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORSE = 1.10  # cur/base above this is flagged (below 1/WORSE: better)
CHILD_TIMEOUT = 1800.0  # one scenario of one revision, REMOTE at full size included
TREE_ENV = "ZAG_BENCH_TREE"  # the child checks that zag_async comes from this directory


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class BaselineError(RuntimeError):
    """REV cannot be resolved or exported."""


@dataclass(frozen=True)
class Tree:
    """One revision of the package: where it is and what to call it."""

    label: str  # "baseline" or "current"
    path: Path  # the directory that holds zag_async/ (goes on PYTHONPATH)
    describe: str  # short sha and subject, for the report


def _git(*args: str) -> str:
    proc = subprocess.run(
        ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise BaselineError(f"git {' '.join(args)}: {proc.stderr.strip() or proc.returncode}")
    return proc.stdout.strip()


def current_tree() -> Tree:
    """This checkout (the one run.py lives in), with a mark when zag_async has local edits."""
    try:
        describe = _git("log", "-1", "--format=%h %s")
        if _git("status", "--porcelain", "--", "zag_async"):
            describe += " + uncommitted changes"
    except (BaselineError, OSError) as exc:
        describe = f"(not a git checkout: {exc})"
    return Tree("current", ROOT, describe)


def export(rev: str, dest: Path, label: str = "baseline") -> Tree:
    """Write REV's zag_async/ under ``dest`` (git archive; the repository is untouched)."""
    try:
        sha = _git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    except OSError as exc:
        raise BaselineError(f"git is needed for --{label}: {exc}") from exc
    except BaselineError as exc:
        raise BaselineError(f"--{label} {rev}: not a commit of {ROOT}") from exc
    proc = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", sha, "zag_async"],
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        raise BaselineError(f"git archive {rev}: {proc.stderr.decode().strip()}")
    with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as tar:
        tar.extractall(dest, filter="data")
    return Tree(label, dest, f"{_git('log', '-1', '--format=%h %s', sha)} (--{label} {rev})")


def run_child(
    tree: Tree, scenario: str, *, quick: bool, extra: Iterable[str] = ()
) -> list[Measurement]:
    """The zag side of one scenario in a fresh ``run.py`` with PYTHONPATH at ``tree``.

    A child that fails is reported as an ``(error)`` row, not raised.
    """
    with tempfile.TemporaryDirectory(prefix="zag-bench-child-") as tmp:
        out = Path(tmp) / "rows.json"
        cmd = [
            sys.executable,
            str(HERE / "run.py"),
            "--only-zag",
            "--only",
            scenario,
            "--json",
            str(out),
            "--baseline-child",
            *extra,
        ]
        if quick:
            cmd.append("--quick")
        inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tree.path), *inherited]))
        env[TREE_ENV] = str(tree.path)
        log(f"{tree.label} zag: {scenario} (PYTHONPATH={tree.path})")
        t0 = time.perf_counter()
        # Its own process group, so a timeout or Ctrl-C also ends the workers it started.
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, start_new_session=True)
        try:
            reason = f"exit {proc.wait(timeout=CHILD_TIMEOUT)}"
        except subprocess.TimeoutExpired:
            reason = f"timed out after {CHILD_TIMEOUT:.0f} s"
        finally:
            _end_group(proc)
        log(f"{tree.label} zag: {scenario} done in {time.perf_counter() - t0:.1f} s")
        if not out.exists():
            return [
                Measurement(
                    ZAG,
                    scenario,
                    "(error)",
                    "scenario",
                    "",
                    None,
                    f"{tree.label} child failed: {reason}",
                )
            ]
        payload = json.loads(out.read_text())
    return [_measurement(row) for row in payload["rows"]]


def _end_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the child's process group if anything of it is left, then SIGKILL."""
    for sig, grace in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
        if not _signal_group(proc, sig):
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.1)  # reap the child itself (a zombie stays in the group)
            if not _signal_group(proc, 0):  # 0: only ask whether the group still exists
                return


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> bool:
    """Send ``sig`` to the child's process group; False when the group is gone."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return False
    return True


def _measurement(row: dict[str, Any]) -> Measurement:
    """A row of ``run.py --json`` back as a Measurement."""
    stats = row["stats"]
    return Measurement(**{**row, "stats": Stats(**stats) if stats is not None else None})


def check_child_tree() -> str | None:
    """In a child: None when zag_async was imported from the tree the parent asked for."""
    want = os.environ.get(TREE_ENV)
    if not want:
        return None
    import zag_async

    got = Path(zag_async.__file__).resolve().parent.parent
    if got != Path(want).resolve():
        return f"zag_async imported from {got}, expected {want}"
    return None


def merge(rounds: list[list[Measurement]]) -> list[Measurement]:
    """One row per (scenario, case, metric) from several rounds of the same side."""
    order: list[tuple[str, str, str]] = []
    groups: dict[tuple[str, str, str], list[Measurement]] = {}
    for rows in rounds:
        for m in rows:
            key = (m.scenario, m.case, m.metric)
            if key not in groups:
                order.append(key)
            groups.setdefault(key, []).append(m)
    merged = []
    for key in order:
        ms = groups[key]
        stats = [m.stats for m in ms if m.stats is not None]
        if not stats:
            merged.append(ms[0])
            continue
        note = ms[0].note
        if len(stats) < len(ms):
            note = f"{note}; missing in {len(ms) - len(stats)} of {len(ms)} rounds".lstrip("; ")
        merged.append(
            replace(
                ms[0],
                note=note,
                stats=Stats(
                    statistics.median(s.median for s in stats),
                    min(s.min for s in stats),
                    max(s.max for s in stats),
                    sum(s.n for s in stats),
                ),
            )
        )
    return merged


# --------------------------------------------------------------------------- table


def higher_is_better(m: Measurement) -> bool:
    """Rates and "raw / zag" style ratios: a bigger figure is the better one."""
    return m.unit == "1/s" or m.metric.startswith(("rate /", "raw CPU /"))


def is_control(m: Measurement) -> bool:
    """Figures with no zag code in them (raw aio-pika, raw commits): they show the noise."""
    return m.case.startswith("raw") or m.metric.startswith(("raw commit", "aiosqlite commit"))


def cost_ratios(cur: Stats, base: Stats, higher: bool) -> tuple[float, float] | None:
    """current / baseline of the medians and of the best runs, both as costs (>1 is worse).

    For higher-is-better figures the ratio is inverted and the best run is the max.
    """
    pairs = ((cur.median, base.median), (cur.max, base.max) if higher else (cur.min, base.min))
    if any(c <= 0 or b <= 0 for c, b in pairs):
        return None
    (cm, bm), (cb, bb) = pairs
    return (bm / cm, bb / cb) if higher else (cm / bm, cb / bb)


def verdict(ratios: tuple[float, float]) -> str:
    """WORSE only when the medians and the best runs both say so (noise moves one of them)."""
    if min(ratios) > WORSE:
        return "WORSE"
    if max(ratios) < 1 / WORSE:
        return "better"
    return "same"


def _short(describe: str, width: int = 90) -> str:
    return describe if len(describe) <= width else describe[: width - 3] + "..."


def print_comparison(
    scenarios: list[str],
    titles: dict[str, str],
    current: list[Measurement],
    baseline: list[Measurement],
    peer: list[Measurement],
    trees: tuple[Tree, Tree],
    rounds: int,
    peer_note: str,
    fmt_stats: Callable[[Stats | None, str], str],
) -> list[str]:
    """Print TaskFlow, baseline zag, current zag and cur/base per figure; return the WORSE ones."""
    base_tree, cur_tree = trees
    print(
        f"\nzag-async: current vs baseline ({rounds} subprocess runs per revision and scenario, "
        "order alternating)"
    )
    print(f"  baseline    {_short(base_tree.describe)}")
    print(f"  current     {_short(cur_tree.describe)}")
    print("  cur/base    current / baseline of the medians (best: of the fastest runs); for rates")
    print("              (higher is better) baseline / current: above 1 is always worse")
    print(f"  WORSE       both ratios above {WORSE:.2f} (one alone is usually noise); rows marked")
    print(
        "              (control) hold no zag code (raw aio-pika, raw commits): their ratios "
        "show the noise"
    )
    if peer_note:
        print(f"  TaskFlow    {peer_note}")
    keyed = {
        side: {(m.scenario, m.case, m.metric): m for m in rows}
        for side, rows in (("cur", current), ("base", baseline), ("peer", peer))
    }
    headers = (
        "case",
        "metric",
        "unit",
        "TaskFlow",
        "baseline zag",
        "current zag",
        "cur/base",
        "best",
        "",
    )
    flagged: list[str] = []
    for scenario in scenarios:
        keys = list(
            dict.fromkeys(
                (m.scenario, m.case, m.metric) for m in current + baseline if m.scenario == scenario
            )
        )
        lines = []
        for key in keys:
            c, b, p = (keyed[side].get(key) for side in ("cur", "base", "peer"))
            row = c or b
            assert row is not None
            ratios = None
            if c and c.stats and b and b.stats:
                ratios = cost_ratios(c.stats, b.stats, higher_is_better(row))
            if ratios is None:
                mark = (
                    "; ".join(
                        f"{who}: {m.note}"
                        for who, m in (("base", b), ("cur", c))
                        if m and m.stats is None and m.note
                    )
                    or "missing on one side"
                )
            elif is_control(row):
                mark = "(control)"
            else:
                mark = verdict(ratios)
                if mark == "WORSE":
                    flagged.append(
                        f"{scenario} {key[1]} {key[2]}: {ratios[0]:.2f}x (best {ratios[1]:.2f}x)"
                    )
            lines.append(
                (
                    key[1],
                    key[2],
                    row.unit,
                    fmt_stats(p.stats, p.note) if p else "-",
                    fmt_stats(b.stats, b.note) if b else "-",
                    fmt_stats(c.stats, c.note) if c else "-",
                    f"{ratios[0]:.3f}" if ratios else "",
                    f"{ratios[1]:.3f}" if ratios else "",
                    mark,
                )
            )
        print_columns(f"{titles.get(scenario, scenario)}: current vs baseline", headers, lines)
    if flagged:
        print(
            f"\n{len(flagged)} figure(s) WORSE than {WORSE:.2f}x the baseline (look at the "
            "spread and the controls before believing one; rerun with more --baseline-rounds):"
        )
        for line in flagged:
            print(f"  {line}")
    else:
        print(f"\nno figure worse than {WORSE:.2f}x the baseline")
    return flagged
