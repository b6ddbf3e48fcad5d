"""Fixtures for the crash and outage tests: real processes, real PostgreSQL.

Tests that need PostgreSQL fail when the environment variable CI is set and
the server is unreachable (CI starts it through scripts/services.sh), and
skip with the reason otherwise.
"""

from __future__ import annotations

import asyncio
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import free_port, run_in_thread, unavailable

PG_URL = os.environ.get("ZAG_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def pg_url() -> str:
    """The shared PostgreSQL (database `test`), checked once per session."""

    async def probe() -> None:
        import asyncpg

        dsn = PG_URL.replace("postgresql+asyncpg://", "postgresql://", 1)
        conn = await asyncpg.connect(dsn, timeout=3)
        await conn.close()

    try:
        run_in_thread(probe())
    except Exception as exc:
        reason = f"PostgreSQL at {PG_URL} is unreachable: {type(exc).__name__}: {exc}"
        unavailable(reason, "postgres")
    return PG_URL


@pytest.fixture(scope="session")
def pg_bindir() -> str:
    """The directory holding initdb and pg_ctl (Debian keeps them off PATH)."""
    initdb = shutil.which("initdb")
    if initdb is None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        initdb = found[-1] if found else None
    if initdb is None:
        unavailable("PostgreSQL server binaries (initdb, pg_ctl) are not installed", "postgres")
    return os.path.dirname(initdb)


class PrivatePostgres:
    """A throwaway PostgreSQL server on its own loopback port, to stop and start at will.

    Runs as user `postgres` when the tests run as root (initdb refuses root).
    `stop()` is `pg_ctl -m immediate stop`: the server dies as in a crash.
    """

    def __init__(self, bindir: str, base: Path, port: int) -> None:
        self.bindir, self.base, self.port = bindir, base, port
        self.data = base / "data"
        self.url = f"postgresql+asyncpg://postgres@127.0.0.1:{port}/postgres"
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def _cmd(self, tool: str, *args: str) -> list[str]:
        return [*self._as, os.path.join(self.bindir, tool), *args]

    def _ctl(self, *args: str) -> list[str]:
        return self._cmd("pg_ctl", "-D", str(self.data), *args)

    def init(self) -> None:
        subprocess.run(
            self._cmd("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres",
                      "--no-sync"),
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip

    def _start_args(self, wait: bool = True) -> list[str]:
        options = f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off"
        waiting = ["-w", "-t", "60"] if wait else ["-W"]
        return self._ctl("-l", str(self.base / "log"), *waiting, "-o", options, "start")

    def start_sync(self) -> None:
        subprocess.run(self._start_args(), check=True, capture_output=True, timeout=90)

    async def _run(self, args: list[str]) -> None:
        proc = await asyncio.create_subprocess_exec(
            *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed:\n{out.decode()}")

    async def start(self, *, wait: bool = True) -> None:
        """Start the server; with wait=False return before it accepts connections."""
        await self._run(self._start_args(wait))

    async def stop(self) -> None:
        """Kill the server the hard way (no checkpoint, clients cut off)."""
        await self._run(self._ctl("-m", "immediate", "-w", "stop"))

    def running(self) -> bool:
        return subprocess.run(self._ctl("status"), capture_output=True).returncode == 0

    def close(self) -> None:
        if self.running():
            subprocess.run(self._ctl("-m", "immediate", "-w", "stop"), capture_output=True)
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="module")
def private_pg(pg_bindir: str) -> Iterator[PrivatePostgres]:
    """A private server for outage tests (initdb ~0.5 s, start ~0.2 s), one per module."""
    base = Path(tempfile.mkdtemp(prefix="zag-pg-"))
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(base)
            unavailable(
                "no 'postgres' user to run a private PostgreSQL as (initdb refuses root)",
                "postgres",
            )
        os.chown(base, pw.pw_uid, pw.pw_gid)
    server = PrivatePostgres(pg_bindir, base, free_port())
    try:
        server.init()
        server.start_sync()
    except (subprocess.SubprocessError, OSError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        server.close()
        unavailable(
            f"could not start a private PostgreSQL: {exc} {detail.decode()[-500:]}", "postgres"
        )
    try:
        yield server
    finally:
        server.close()
