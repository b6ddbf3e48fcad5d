"""Remote workers against a real RabbitMQ (127.0.0.1:5672, or ZAG_TEST_AMQP=URL).

Every test gets its own topic (`topic`), so tests never see each other's
requests; its queue zag.q.<topic> is deleted afterwards. `start_workers`
runs Workers in this process (tasks from `tasks.py`, observed through its
module records); `spawn_worker` runs them as subprocesses (worker_main.py, or
the `python -m zag_async worker` CLI), killed at teardown if still alive;
`remote` opens RemoteExecutors on the test's topic.

Without a reachable RabbitMQ the tests that need it skip, unless CI is set:
then they fail, because CI must run them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from support import eventually

import zag_async as zag

from . import tasks

HERE = Path(__file__).resolve().parent
#: The directory to put on PYTHONPATH so subprocesses import `tasks` under the
#: same module name as this process does (task keys are module:qualname).
TASKS_ROOT = Path(tasks.__file__).resolve().parents[len(tasks.__name__.split(".")) - 1]


@pytest.fixture(autouse=True)
def _fresh_records() -> Iterator[None]:
    tasks.reset()
    yield
    tasks.reset()


# -- broker helpers -------------------------------------------------------------------


@contextlib.asynccontextmanager
async def channel(url: str) -> AsyncIterator[Any]:
    """A plain aio-pika channel (for looking at queues and publishing by hand)."""
    import aio_pika

    connection = await aio_pika.connect(url, timeout=10)
    try:
        yield await connection.channel()
    finally:
        await connection.close()


async def delete_queues(url: str, *names: str) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(10), channel(url) as ch:
            for name in names:
                await ch.queue_delete(name)


async def queue_depth(url: str, name: str) -> int:
    """Messages ready in a queue (0 when it does not exist)."""
    import aio_pika

    try:
        async with channel(url) as ch:
            queue = await ch.declare_queue(name, passive=True)
            return int(queue.declaration_result.message_count or 0)
    except aio_pika.exceptions.ChannelClosed:
        return 0


async def take_dead(
    url: str, match: Callable[[Any], bool], *, within: float = 10.0, what: str = "message"
) -> Any:
    """Find (and remove) the first message in queue zag.dead for which `match(message)`.

    Other messages are left where they are: they are fetched without ack and
    go back when the channel closes. Returns the message (body and headers).
    """

    async def scan() -> Any:
        async with channel(url) as ch:
            queue = await ch.declare_queue("zag.dead", durable=True)
            while True:
                message = await queue.get(no_ack=False, fail=False, timeout=5)
                if message is None:
                    return None
                if match(message):
                    await message.ack()
                    return message

    return await eventually(scan, within=within, what=f"{what} in zag.dead")


@pytest.fixture
async def topic(amqp_url: str) -> AsyncIterator[str]:
    """A topic no other test uses; its queue is deleted afterwards."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    yield name
    await delete_queues(amqp_url, f"zag.q.{name}")


# -- in-process workers and executors -------------------------------------------------

StartWorkers = Callable[..., Awaitable[list[zag.Worker]]]


@pytest.fixture
async def start_workers(amqp_url: str, topic: str) -> AsyncIterator[StartWorkers]:
    """`await start_workers(n=1, worker_class=zag.Worker, **kwargs)`: n serving Workers.

    They take requests for the test's topic from the main broker unless `topic=`
    or `url=` say otherwise.

    They serve in background tasks until the test ends; then they are stopped
    (gracefully, bounded) and closed.
    """
    stack = contextlib.AsyncExitStack()
    serving: list[tuple[zag.Worker, asyncio.Task[None]]] = []

    async def start(
        n: int = 1, *, worker_class: type[zag.Worker] = zag.Worker, **kwargs: Any
    ) -> list[zag.Worker]:
        kwargs.setdefault("tasks", tasks.ALL)
        kwargs.setdefault("announce_every", 0.5)
        kwargs.setdefault("topic", topic)
        started = []
        url = kwargs.pop("url", amqp_url)
        for _ in range(n):
            worker = await stack.enter_async_context(worker_class(url, **kwargs))
            serving.append((worker, asyncio.create_task(worker.serve())))
            started.append(worker)
        return started

    try:
        yield start
    finally:
        for worker, _ in serving:
            worker.stop()
        for _, task in serving:
            try:
                async with asyncio.timeout(10):
                    await task
            except BaseException:
                task.cancel()
        async with asyncio.timeout(15):
            await stack.aclose()


Remote = Callable[..., Awaitable[zag.RemoteExecutor]]


@pytest.fixture
async def remote(amqp_url: str, topic: str) -> AsyncIterator[Remote]:
    """`await remote(**RemoteExecutor kwargs)`: an open executor on the test's topic."""
    stack = contextlib.AsyncExitStack()

    async def open_executor(**kwargs: Any) -> zag.RemoteExecutor:
        kwargs.setdefault("topics", [topic])
        kwargs.setdefault("discovery_timeout", 5.0)
        url = kwargs.pop("url", amqp_url)
        return await stack.enter_async_context(zag.RemoteExecutor(url, **kwargs))

    try:
        yield open_executor
    finally:
        async with asyncio.timeout(15):
            await stack.aclose()


async def wait_for_workers(executor: zag.RemoteExecutor, *names: str, within: float = 10.0) -> None:
    """Until discovery has seen these workers (so they are consuming)."""
    await eventually(
        lambda: all(n in executor.workers() for n in names),
        within=within,
        what=f"workers {names} to be discovered",
    )


# -- worker subprocesses --------------------------------------------------------------


@dataclass
class WorkerProcess:
    """A worker subprocess; its output goes to `log`."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL, and reap."""
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)

    async def wait_exit(self, within: float = 15.0) -> int:
        await eventually(lambda: not self.alive(), within=within, what=f"{self.name} to exit")
        return int(self.proc.returncode)

    async def ready(self, within: float = 20.0) -> None:
        """Until it printed its "serving" line (it fails fast if the process died)."""

        def serving() -> bool:
            if "serving" in self.output():
                return True
            if not self.alive():
                raise AssertionError(f"worker {self.name} exited early:\n{self.output()}")
            return False

        await eventually(serving, within=within, what=f"worker {self.name} to serve")


SpawnWorker = Callable[..., Awaitable[WorkerProcess]]


def _popen(cmd: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start cmd with its output in log (returns at once: no need for the async API)."""
    with log.open("wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)


@pytest.fixture
async def spawn_worker(amqp_url: str, topic: str, tmp_path: Path) -> AsyncIterator[SpawnWorker]:
    """`await spawn_worker(cli=False, topic=..., heartbeat=..., delivery_limit=..., serves=())`.

    Starts a worker subprocess serving `tasks.ALL` (or the tasks named in
    `serves`, without cli) and waits until it prints
    its "serving" line. With cli=True it is `python -m zag_async worker`
    (whose name is read from that line), else worker_main.py. Every process
    still alive at teardown is killed.
    """
    procs: list[WorkerProcess] = []
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(TASKS_ROOT), env.get("PYTHONPATH", "")) if p
    )
    env["PYTHONUNBUFFERED"] = "1"

    async def spawn(
        *,
        cli: bool = False,
        topic: str = topic,
        url: str = amqp_url,
        heartbeat: float = 0.2,
        delivery_limit: int = 5,
        concurrency: int = 4,
        serves: tuple[str, ...] = (),
    ) -> WorkerProcess:
        name = f"w{len(procs)}-{uuid.uuid4().hex[:6]}"
        log = tmp_path / f"{name}.log"
        if cli:
            cmd = [
                sys.executable, "-m", "zag_async", "worker", "--topic", topic, "--url", url,
                "--concurrency", str(concurrency), f"{tasks.__name__}:ALL",
            ]  # fmt: skip
        else:
            cmd = [
                sys.executable, str(HERE / "worker_main.py"), "--module", tasks.__name__,
                "--topic", topic, "--url", url, "--name", name, "--heartbeat", str(heartbeat),
                "--delivery-limit", str(delivery_limit), "--concurrency", str(concurrency),
            ]  # fmt: skip
            if serves:
                cmd += ["--tasks", ",".join(serves)]
        worker = WorkerProcess(name, _popen(cmd, log, env), log)
        procs.append(worker)
        await worker.ready()
        if cli:  # "worker NAME serving N tasks on topic 'T'"
            worker.name = worker.output().split("worker ", 1)[1].split(" serving", 1)[0]
        return worker

    try:
        yield spawn
    finally:
        for worker in procs:
            with contextlib.suppress(Exception):
                worker.kill()


def failure_types(error: BaseException) -> tuple[str, ...]:
    """The exception types an engine error carries: RemoteFailure's failure, or its own MRO."""
    if isinstance(error, zag.errors.RemoteFailure):
        return error.failure.exception_types
    return zag.Failure.from_exception(error).exception_types


def as_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=repr)
