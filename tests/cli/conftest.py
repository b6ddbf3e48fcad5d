"""The command line, run for real: every test starts `python -m zag_async` or the
installed `zag-async` script in a subprocess.

Flows come from tests/cli/cli_flows.py (on the subprocess's PYTHONPATH as
`cli_flows`) and from examples/. PostgreSQL (127.0.0.1:5432) and ZooKeeper
(127.0.0.1:2181) are the real servers; without them those tests skip, unless
CI is set: then they fail, because CI must run them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support import delete_zk_path, eventually_sync, fresh_pg_database

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
SCRIPT = shutil.which("zag-async", path=str(Path(sys.executable).parent))
ENTRIES = ["module", "script"]


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a CLI subprocess: cli_flows and examples importable,
    no ZAG_* settings inherited from whoever runs the tests."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZAG_")}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(ROOT)])
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    env.update(extra)
    return env


def command(entry: str = "module") -> list[str]:
    """How to start the CLI: `python -m zag_async`, or the installed script."""
    if entry == "module":
        return [sys.executable, "-m", "zag_async"]
    if SCRIPT is None:
        pytest.fail(f"the zag-async script is not installed next to {sys.executable}")
    return [SCRIPT]


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()

    def one_error_line(self) -> str:
        """The single `zag-async: ...` line a failed command must print (and nothing else)."""
        lines = [line for line in self.err.splitlines() if line.strip()]
        assert "Traceback" not in self.err, self.err
        assert len(lines) == 1, f"expected one line on stderr, got:\n{self.err}"
        assert lines[0].startswith("zag-async: "), lines[0]
        return lines[0]


def zag(
    *args: str,
    entry: str = "module",
    cwd: Path = ROOT,
    env: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> Result:
    """Run the CLI once and wait for it."""
    done = subprocess.run(
        [*command(entry), *args],
        cwd=cwd,
        env=env if env is not None else cli_env(),
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=timeout,
        check=False,
    )
    return Result(done.returncode, done.stdout, done.stderr)


def zag_many(*calls: tuple[str, ...], **options: Any) -> list[Result]:
    """Run several independent CLI calls at once (they are mostly interpreter start-up)."""
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda args: zag(*args, **options), calls))


def ok(*args: str, **options: Any) -> Result:
    """Run the CLI and insist it succeeds."""
    result = zag(*args, **options)
    assert result.code == 0, f"exit {result.code}\n{result.out}\n{result.err}"
    return result


class Running:
    """A long-running CLI process (conductor, slow run) with its output in files."""

    def __init__(
        self, args: list[str], tmp: Path, entry: str = "module", sigint_ignored: bool = False
    ) -> None:
        self.out_path = tmp / f"out-{uuid.uuid4().hex[:6]}.txt"
        self.err_path = self.out_path.with_suffix(".err")
        # A non-interactive shell starts background commands with SIGINT ignored.
        ignore = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint_ignored else None
        with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [*command(entry), *args],
                cwd=ROOT,
                env=cli_env(),
                stdout=out,
                stderr=err,
                preexec_fn=ignore,
            )

    def output(self) -> str:
        return self.out_path.read_text(encoding="utf-8")

    def errors(self) -> str:
        return self.err_path.read_text(encoding="utf-8")

    def wait_for(self, text: str, within: float = 15.0) -> str:
        """Poll the output until it contains `text`; returns the output."""

        def seen() -> str:
            out = self.output()
            assert self.proc.poll() is None or text in out, (
                f"exited {self.proc.returncode} before printing {text!r}:\n{out}\n{self.errors()}"
            )
            return out if text in out else ""

        return eventually_sync(seen, within=within, what=f"{text!r} in the output")

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def wait(self, within: float = 20.0) -> int:
        return self.proc.wait(timeout=within)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Running]]:
    """`spawn(*args, entry=...)`: start a CLI process; killed at teardown if still alive."""
    started: list[Running] = []

    def start(*args: str, entry: str = "module", sigint_ignored: bool = False) -> Running:
        running = Running(list(args), tmp_path, entry, sigint_ignored)
        started.append(running)
        return running

    yield start
    for running in started:
        running.kill()


@pytest.fixture(params=ENTRIES)
def entry(request: pytest.FixtureRequest) -> str:
    """Both ways in: `python -m zag_async` and the installed `zag-async` script."""
    return str(request.param)


# -- services -------------------------------------------------------------------------------


@pytest.fixture
def board_url(zk_server: str) -> Iterator[str]:
    """A ZooKeeper board of this test's own (its path is deleted afterwards)."""
    path = f"/zag-test/cli-{uuid.uuid4().hex}"
    yield f"zookeeper://{zk_server}{path}"
    asyncio.run(delete_zk_path(zk_server, path))


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this session, as a zag URL."""
    with fresh_pg_database("zag_cli") as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'flows.db'}"


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    """A flow-state database: SQLite in tmp_path, then PostgreSQL."""
    if request.param == "sqlite":
        return sqlite_url
    return str(request.getfixturevalue("pg_url"))
