"""Fixtures for the job-board fault tests: private ZooKeeper servers, PostgreSQL, worker processes.

Every ZooKeeper these tests talk to is a private server started here from a
temporary directory (tickTime 200 ms, so 2 s sessions are honoured whatever
the main instance is configured with): one shared by the module-level tests,
and a fresh one for each test that stops and restarts it. PostgreSQL is the
shared server (database `test`); it holds the flow records and the
side-effect table the tasks write to (see flows.py).

Tests needing a service fail when the environment variable CI is set and the
service is missing (CI installs and starts both through scripts/services.sh),
and skip with the reason otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import eventually, free_port, run_in_thread, unavailable

import zag_async as zag

from . import flows

PG_URL = os.environ.get("ZAG_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
WORKER = Path(__file__).with_name("worker.py")
JAVA_DIR = Path("/usr/share/java")
JARS = ("zookeeper", "zookeeper-jute", "slf4j-api", "slf4j-log4j12", "log4j-1.2", "netty-all")

#: Session timeout of every board in these tests (seconds); the server allows 0.4..20 s.
SESSION = 2.0
#: Deadline of each ZooKeeper call.
CALL = 2.0


# -- PostgreSQL ----------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_url() -> str:
    """The shared PostgreSQL, with the side-effect table created (checked once per session)."""
    try:
        run_in_thread(flows.create_log(PG_URL))
    except Exception as exc:
        reason = f"PostgreSQL at {PG_URL} is unreachable: {type(exc).__name__}: {exc}"
        unavailable(reason, "postgres")
    return PG_URL


@pytest.fixture
def run_id() -> str:
    """Tags this test's side-effect rows."""
    return uuid.uuid4().hex


@pytest.fixture
async def backend(pg_url: str) -> AsyncIterator[zag.persistence.Backend]:
    async with zag.connect(pg_url, pool_size=10) as b:
        yield b


# -- ZooKeeper -----------------------------------------------------------------------


def serving(port: int, timeout: float = 0.5) -> bool:
    """True once the server serves clients.

    `ruok` answers `imok` as soon as the port is open, while `srvr` still says
    "This ZooKeeper instance is not currently serving requests"; aiozk sends
    `srvr` first and, on that answer, waits 4 s before it tries again.
    """
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"srvr")
            answer = b""
            while chunk := s.recv(4096):
                answer += chunk
    except OSError:
        return False
    return answer.startswith(b"Zookeeper version:")


class PrivateZooKeeper:
    """A throwaway standalone ZooKeeper on its own loopback port and data directory.

    `stop()` sends SIGTERM (a clean shutdown); `kill()` sends SIGKILL. `start()`
    again reuses the same port and data, so sessions and nodes survive a
    restart the way they would on a real server.
    """

    def __init__(self, base: Path, port: int) -> None:
        self.base, self.port = base, port
        self.proc: subprocess.Popen[bytes] | None = None
        (base / "data").mkdir(parents=True, exist_ok=True)
        (base / "zoo.cfg").write_text(
            "\n".join(
                [
                    "tickTime=200",
                    "minSessionTimeout=400",
                    "maxSessionTimeout=20000",
                    f"dataDir={base / 'data'}",
                    f"clientPort={port}",
                    "clientPortAddress=127.0.0.1",
                    "admin.enableServer=false",
                    "4lw.commands.whitelist=ruok,srvr,stat,mntr",
                    "forceSync=no",
                    "preAllocSize=4096",
                    "",
                ]
            )
        )

    def url(self, root: str | None = None) -> str:
        return f"zookeeper://127.0.0.1:{self.port}{root or '/zag-fault/' + uuid.uuid4().hex}"

    def _spawn(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        conf = "/etc/zookeeper/conf" if Path("/etc/zookeeper/conf").is_dir() else ""
        classpath = ":".join(
            [*([conf] if conf else []), *(str(JAVA_DIR / f"{jar}.jar") for jar in JARS)]
        )
        log = open(self.base / "zookeeper.log", "ab")  # noqa: SIM115 (handed to the child)
        try:
            self.proc = subprocess.Popen(
                ["java", "-Xmx256m", "-Dzookeeper.root.logger=INFO,CONSOLE",
                 f"-Dzookeeper.log.dir={self.base}", "-cp", classpath,
                 "org.apache.zookeeper.server.ZooKeeperServerMain", str(self.base / "zoo.cfg")],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        finally:
            log.close()

    def _died(self) -> str:
        tail = (self.base / "zookeeper.log").read_text(errors="replace")[-2000:]
        return (
            f"ZooKeeper on port {self.port} exited ({self.proc and self.proc.returncode}):\n{tail}"
        )

    def start_sync(self, within: float = 30.0) -> None:
        self._spawn()
        deadline = time.monotonic() + within
        while not serving(self.port):
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(self._died())
            if time.monotonic() > deadline:
                raise RuntimeError(f"ZooKeeper on port {self.port} not ready in {within} s")
            time.sleep(0.05)

    async def start(self, within: float = 30.0) -> float:
        """Start (again) and wait until it serves clients; returns the seconds it took."""
        began = time.monotonic()
        self._spawn()
        deadline = began + within
        while not await asyncio.to_thread(serving, self.port, 0.2):
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(self._died())
            if time.monotonic() > deadline:
                raise RuntimeError(f"ZooKeeper on port {self.port} not ready in {within} s")
            await asyncio.sleep(0.02)
        return time.monotonic() - began

    async def _signal(self, sig: int) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        await asyncio.to_thread(proc.wait, 30)

    async def stop(self) -> None:
        """Shut the server down cleanly (SIGTERM) and wait for it to exit."""
        await self._signal(signal.SIGTERM)

    async def kill(self) -> None:
        """Kill the server (SIGKILL) and wait for it to exit."""
        await self._signal(signal.SIGKILL)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        shutil.rmtree(self.base, ignore_errors=True)


def _new_zookeeper() -> PrivateZooKeeper:
    if shutil.which("java") is None:
        unavailable("ZooKeeper needs java, which is not installed", "zookeeper")
    missing = [jar for jar in JARS if not (JAVA_DIR / f"{jar}.jar").exists()]
    if missing:
        reason = f"ZooKeeper is not installed (missing {', '.join(missing)} in {JAVA_DIR})"
        unavailable(reason, "zookeeper")
    server = PrivateZooKeeper(Path(tempfile.mkdtemp(prefix="zag-zk-")), free_port())
    try:
        server.start_sync()
    except (RuntimeError, OSError) as exc:
        server.close()
        unavailable(f"could not start a private ZooKeeper: {exc}", "zookeeper")
    return server


@pytest.fixture(scope="session")
def shared_zk() -> Iterator[PrivateZooKeeper]:
    """A private ZooKeeper for the tests that do not restart it (each uses its own root)."""
    server = _new_zookeeper()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def private_zk() -> Iterator[PrivateZooKeeper]:
    """A fresh private ZooKeeper this test may stop, kill and restart."""
    server = _new_zookeeper()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def zk_url(shared_zk: PrivateZooKeeper) -> str:
    """A unique board root on the shared private ZooKeeper."""
    return shared_zk.url()


# -- worker processes ------------------------------------------------------------------


class Worker:
    """One worker.py subprocess; its events are JSON lines in `events_path`."""

    def __init__(self, name: str, proc: subprocess.Popen[bytes], base: Path) -> None:
        self.name, self.proc, self.base = name, proc, base
        self.events_path = base / f"{name}.events"
        self.killed_at: float | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def events(self, kind: str | None = None, job: str | None = None) -> list[dict[str, Any]]:
        try:
            text = self.events_path.read_text()
        except FileNotFoundError:
            return []
        out = []
        for line in text.splitlines(keepends=True):
            if not line.endswith("\n"):
                break  # being written
            event = json.loads(line)
            if (kind is None or event["kind"] == kind) and (job is None or event.get("job") == job):
                out.append(event)
        return out

    def output(self) -> str:
        return (self.base / f"{self.name}.out").read_text(errors="replace")[-4000:]

    def alive(self) -> bool:
        return self.proc.poll() is None

    async def ready(self, within: float = 20.0) -> dict[str, Any]:
        async def check() -> dict[str, Any] | None:
            if not self.alive():
                raise AssertionError(f"worker {self.name} exited early:\n{self.output()}")
            found = self.events("ready")
            return found[0] if found else None

        return await eventually(check, within=within, what=f"worker {self.name} ready")  # type: ignore[no-any-return]

    def signal(self, sig: int) -> float:
        """Send `sig` to this worker only; returns the wall-clock time it was sent."""
        self.proc.send_signal(sig)
        return time.time()

    def kill(self) -> float:
        self.killed_at = self.signal(signal.SIGKILL)
        return self.killed_at

    async def stop(self, within: float = 30.0) -> int:
        """SIGTERM (the worker stops its conductor gracefully) and wait for the exit code."""
        if self.alive():
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
        return await self.exited(within)

    async def exited(self, within: float = 30.0) -> int:
        try:
            return await asyncio.to_thread(self.proc.wait, within)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"worker {self.name} did not exit within {within} s:\n{self.output()}"
            ) from None


class Workers:
    """Starts worker.py subprocesses and makes sure each is gone at the end of the test."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.started: list[Worker] = []

    def spawn(self, mode: str, name: str, **config: Any) -> Worker:
        config = {"name": name, "events": str(self.base / f"{name}.events"), **config}
        out = open(self.base / f"{name}.out", "wb")  # noqa: SIM115 (handed to the child)
        try:
            proc = subprocess.Popen(
                [sys.executable, str(WORKER), mode, json.dumps(config)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        finally:
            out.close()
        worker = Worker(name, proc, self.base)
        self.started.append(worker)
        return worker

    def conductor(self, name: str, board_url: str, pg_url: str, **config: Any) -> Worker:
        config.setdefault("session_timeout", SESSION)
        config.setdefault("call_timeout", CALL)
        return self.spawn("conduct", name, board=board_url, pg=pg_url, **config)

    def close(self) -> None:
        for worker in self.started:
            if worker.alive():
                with contextlib.suppress(ProcessLookupError):
                    worker.proc.send_signal(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.proc.wait(10)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    pool = Workers(tmp_path)
    try:
        yield pool
    finally:
        pool.close()


def all_events(*ws: Worker, kind: str | None = None) -> list[dict[str, Any]]:
    return sorted((e for w in ws for e in w.events(kind)), key=lambda e: e["t"])
