"""Every command the README shows is run by some test.

The README's commands are collected (```sh blocks and inline `...` spans that
start like a command) and each must match an entry of TESTED_BY, which names the
test that runs it; the named tests must exist. A new command in the README
without a test fails here. The bench harness, which `./dev bench` runs with
TaskFlow beside it, gets a smoke run of its zag side.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")

#: (pattern a command must match, "tests/file.py::test_name" that runs it)
TESTED_BY: list[tuple[str, str]] = [
    (r"\./dev demo", "tests/test_readme.py::test_demo_shows_success_revert_and_retry"),
    (r"\./dev test", "tests/test_readme.py::test_ci_runs_the_readme_test_command"),
    (
        r'\./dev test -m "not services"',
        "tests/test_readme_commands.py::test_the_fast_suite_leaves_out_what_needs_services",
    ),
    (r"\./dev (lint|typecheck)", "tests/test_readme_commands.py::test_ci_runs_lint_and_typecheck"),
    (r"\./dev bench\b.*", "tests/test_readme_commands.py::test_bench_harness_runs"),
    (r"\./dev$", "tests/test_readme.py::test_ci_runs_the_readme_test_command"),
    (r"pip install 'zag-async\[(\w+)\]'", "tests/test_readme_commands.py::test_extras_exist"),
    (r"zag-async\[(\w+)\]", "tests/test_readme_commands.py::test_extras_exist"),
    (
        r"python -m zag_async worker .*",
        "tests/workers/test_worker_faults.py::test_sigterm_finishes_the_in_flight_request",
    ),
    (r"zag-async db upgrade .*", "tests/cli/test_basics.py::test_db_upgrade"),
    (
        r"zag-async conductor --metrics-port .*",
        "tests/cli/test_jobs.py::test_conductor_runs_jobs_and_stops_gracefully",
    ),
    (
        r"zag-async run --resume .*",
        "tests/cli/test_run.py::test_an_interrupted_run_is_suspended_and_resumes",
    ),
    (r"zag-async worker", "tests/cli/test_basics.py::test_every_command_has_help"),
    (
        r"zag-async signal .*",
        "tests/cli/test_signal.py::test_a_signal_ends_the_wait_when_the_flow_resumes",
    ),
    (r"(zag-async|python -m zag_async)", "tests/cli/test_basics.py::test_help_lists_every_command"),
    (r"zag-async ui .*", "tests/ui/test_readme_ui.py::test_the_ui_command_as_shown"),
    (r"zag-async --debug .*", "tests/cli/test_errors.py::test_every_bad_input_is_one_clear_line"),
    (r"zag-async: \.\.\.", "tests/cli/test_errors.py::test_every_bad_input_is_one_clear_line"),
    # The Command line and Flow pictures sections' ```sh blocks, line by line:
    (
        r"(zag-async (run|flows|jobs|conductor|graph)|export ZAG_).*",
        "tests/cli/test_readme.py::test_every_command_runs_as_shown",
    ),
]

COMMAND = re.compile(r"^(\./dev|zag-async|python -m zag_async|pip install|export ZAG_)")


def shown_commands() -> list[str]:
    found = []
    for block in re.findall(r"```sh\n(.*?)```", README, re.S):
        for line in block.splitlines():
            command = line.split("  #")[0].strip()
            if command:
                found.append(command)
    prose = re.sub(r"```.*?```", "", README, flags=re.S)
    found += [span for span in re.findall(r"`([^`\n]+)`", prose) if COMMAND.match(span)]
    return found


def test_every_readme_command_has_a_test() -> None:
    commands = shown_commands()
    assert len(commands) > 20  # the collector still finds them
    untested = [c for c in commands if not any(re.fullmatch(p, c) for p, _ in TESTED_BY)]
    assert not untested, f"README commands no test runs: {untested}"


@pytest.mark.parametrize("test_id", sorted({t for _, t in TESTED_BY}))
def test_the_named_test_exists(test_id: str) -> None:
    path, name = test_id.split("::")
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
    functions = (ast.FunctionDef, ast.AsyncFunctionDef)
    names = {n.name for n in ast.walk(tree) if isinstance(n, functions)}
    assert name in names, test_id


def test_ci_runs_lint_and_typecheck() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "./dev lint" in ci and "./dev typecheck" in ci


def test_extras_exist() -> None:
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "optional-dependencies"
    ]
    named = set(re.findall(r"zag-async\[(\w+)\]", README))
    assert named and named <= set(extras), named - set(extras)


def test_the_fast_suite_leaves_out_what_needs_services() -> None:
    """`-m "not services"` (what `./dev test` hands to pytest) keeps the core tests and
    drops those needing a server, by fixture, by parameter or by suite."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "--collect-only",
            "-q",
            "-m",
            "not services",
            "tests/test_backoff.py",
            "tests/persistence/test_codec.py",
            "tests/persistence/test_conformance.py",
            "tests/crash/test_outage.py",
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    kept = [line for line in out.stdout.splitlines() if "::" in line]
    assert any(line.startswith("tests/test_backoff.py::") for line in kept), out.stdout
    assert any("[sqlite]" in line for line in kept), out.stdout
    assert not [line for line in kept if "[postgres]" in line or "crash/" in line], out.stdout


def test_bench_harness_runs() -> None:
    out = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--quick", "--only-zag", "--only", "S1,S5"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "S1" in out.stdout and "S5" in out.stdout


@pytest.mark.services
def test_bench_waits_runs(zk_server: str) -> None:
    """The WAITS scenario at toy sizes (SQLite, PostgreSQL and ZooKeeper): every part
    measures, none fails or is skipped."""
    import socket

    from support import unavailable

    try:
        socket.create_connection(("127.0.0.1", 5432), timeout=2).close()
    except OSError as exc:
        unavailable(f"PostgreSQL at 127.0.0.1:5432 is not usable: {exc}", "postgres")
    sizes = ["--latency-n", "3", "--many-n", "20", "--timer-n", "2"]
    out = subprocess.run(
        [sys.executable, "benchmarks/waits.py", *sizes, "--timer-first", "0.5"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "lateness p99" in out.stdout and "DB bytes per waiting flow" in out.stdout


@pytest.mark.services
def test_bench_s8_runs() -> None:
    """S8 (many flows at once) at a toy size in memory, on SQLite and on PostgreSQL: every
    figure measures, commits per atom included."""
    import socket

    from support import unavailable

    try:
        socket.create_connection(("127.0.0.1", 5432), timeout=2).close()
    except OSError as exc:
        unavailable(f"PostgreSQL at 127.0.0.1:5432 is not usable: {exc}", "postgres")
    out = subprocess.run(
        [sys.executable, "benchmarks/many.py", "--sizes", "20"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "commits per atom (pg_stat)" in out.stdout and "sqlite, N=20" in out.stdout


@pytest.mark.services
def test_bench_peers_runs() -> None:
    """PEERS at a toy size: zag and DBOS (SQLite file, PostgreSQL) and Celery on RabbitMQ all
    measure. dbos and celery are bench-only (the nox bench session installs them): without
    them here the test skips."""
    import socket

    from support import unavailable

    for name in ("dbos", "celery"):
        pytest.importorskip(name, reason=f"{name} is bench-only: ./dev bench installs it")
    for port, service in ((5432, "postgres"), (5672, "rabbitmq")):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        except OSError as exc:
            unavailable(f"{service} at 127.0.0.1:{port} is not usable: {exc}", service)
    sizes = ["--quick", "--rounds", "1", "--serial-n", "10", "--concurrent-n", "10"]
    sizes += ["--celery-n", "50", "--no-sync"]
    out = subprocess.run(
        [sys.executable, "benchmarks/peers.py", *sizes],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    for case in ("sqlite: 1 workflow of 10 steps", "postgres: 10 concurrent x 3 steps"):
        assert case in out.stdout, out.stdout[-3000:]
    assert "round trips/s c=64" in out.stdout
