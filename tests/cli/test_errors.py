"""Bad input anywhere: one line `zag-async: ...` on stderr, a non-zero exit, and a
traceback only with --debug."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

from .conftest import ENTRIES, Result, cli_env, zag

UNREACHABLE_PG = "postgresql+asyncpg://127.0.0.1:1/x"
UNREACHABLE_ZK = "zookeeper://127.0.0.1:1/zag"

#: (arguments, exit code, text the one line must contain); {tmp} is a temporary directory.
CASES: list[tuple[tuple[str, ...], int, str]] = [
    (("run", "no_such_module:flow"), 2, "No module named 'no_such_module'"),
    (("run", "cli_flows:nope"), 2, "has no attribute 'nope'"),
    (("run", "cli_flows:NOT_A_FLOW"), 2, "neither a flow factory nor a flow"),
    (("run", "cli_flows:pipeline", "--store", "start"), 2,
     "--store 'start' must be written KEY=VALUE"),
    (("run", "cli_flows:pipeline"), 2, "missing requirements: atom 'step1' requires 'start'"),
    (("run", "cli_flows:broken_factory"), 1,
     "ValueError: this factory is broken (run with --debug"),
    (("run", "cli_flows:pipeline", "--store", "start=1", "--backend", UNREACHABLE_PG), 1,
     "Connect call failed ('127.0.0.1', 1)"),
    (("run", "cli_flows:pipeline", "--backend", "nosuch://x"), 2,
     "no storage backend for 'nosuch'"),
    (("run",), 2, "missing MODULE:FACTORY (or --resume FLOW_ID)"),
    (("bogus",), 2, "No such command 'bogus'"),
    (("flows", "list"), 2, "Missing option '--backend'"),
    (("flows", "list", "--backend", "sqlite+aiosqlite:///{tmp}/no/such/dir/f.db"), 1,
     "unable to open database file"),
    (("flows", "show", "00000000-0000-0000-0000-000000000000", "--backend",
      "sqlite+aiosqlite:///{tmp}/f.db"), 1, "no flow '00000000-0000-0000-0000-000000000000'"),
    (("jobs", "list", "--board", UNREACHABLE_ZK, "--timeout", "1"), 1,
     "cannot reach ZooKeeper for zookeeper://127.0.0.1:1/zag: 127.0.0.1:1: connection refused"),
    (("jobs", "post", "cli_flows:pipeline", "--board", UNREACHABLE_ZK), 2,
     "a zookeeper:// board needs --backend"),
    (("jobs", "show", "nope", "--board", "memory://"), 1, "no job 'nope'"),
    (("graph", "cli_flows:pipeline", "--format", "gif"), 2, "'gif' is not one of"),
    (("worker", "--topic", "t", "cli_flows:NOT_A_FLOW"), 2, "is not an atom or a list of atoms"),
]  # fmt: skip


def test_every_bad_input_is_one_clear_line(tmp_path: Path) -> None:
    def attempt(i: int) -> tuple[int, Result]:
        args, _code, _text = CASES[i]
        args = tuple(a.replace("{tmp}", str(tmp_path)) for a in args)
        return i, zag(*args, entry=ENTRIES[i % 2])  # both entry points, alternately

    problems = []
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        for i, result in pool.map(attempt, range(len(CASES))):
            args, code, text = CASES[i]
            try:
                line = result.one_error_line()
                assert result.code == code, f"exit {result.code}, expected {code}"
                assert text in line, f"{text!r} not in {line!r}"
            except AssertionError as exc:
                problems.append(
                    f"zag-async {' '.join(args)}:\n    {exc}\n    stderr: {result.err!r}"
                )
    assert not problems, "\n".join(problems)


def test_debug_shows_the_traceback() -> None:
    result = zag("--debug", "run", "no_such_module:flow")
    assert result.code == 1
    assert "Traceback (most recent call last)" in result.err
    assert "ConfigurationError: cannot import flow factory 'no_such_module:flow'" in result.err

    from_env = zag("run", "cli_flows:broken_factory", env=cli_env(ZAG_DEBUG="1"))
    assert "Traceback" in from_env.err and "ValueError: this factory is broken" in from_env.err
