"""Scenario REMOTE: zag's remote workers over RabbitMQ, beside raw aio-pika in the same run.

What is measured (RabbitMQ at ``URL``; every queue is fresh and deleted afterwards):

- **raw**: an aio-pika request/reply loop against an echo consumer in a
  subprocess (it publishes the body back to ``reply_to`` with the correlation
  id, then acks), sequential (p50/p95/p99 round trip) and with 64 requests in flight
  (round trips/s), plus a one-way rate (publish -> consume, 64 publishes in
  flight). The **baseline** is aio-pika's defaults: a classic queue, transient
  messages, a channel with publisher confirms (aio-pika's default), ack after
  the reply. Variants change one thing at a time toward what zag does (quorum
  queue, persistent requests, no
  confirms), so each cost is measured on its own.
- **zag**: an Engine with ``zag.RemoteExecutor`` running one-atom flows against
  ``python -m zag_async worker`` subprocesses (``remote_tasks:TASKS``): per-flow
  round trip (sequential), ``executor.execute`` alone (no engine), and
  throughput as one unordered flow of 1,000 no-op atoms (1 worker, 4 workers)
  and as 64 concurrent one-atom flows (and 64 ``executor.execute`` calls in
  flight, no engine); messages per request counted in the engine process.
- **what-if**: the same zag with one part of its message pattern changed by
  monkeypatching in this process and in ``remote.py worker`` subprocesses
  (zag_async itself is untouched):
  a classic instead of a quorum queue, transient requests, the request's
  publisher confirm raced with the result (see ``WHATIFS``).
- **CPU per request**: user+system CPU of this process (client/engine), the
  echo/worker subprocesses and the broker (the pid listening on 5672, via
  ``ss``) over the rate runs, divided by the requests. On a loaded 2-core box
  throughput is CPU-bound, so "raw CPU / CPU per request" is a load-independent
  estimate of the throughput ratio, printed beside the measured one.
- Ratios against the baseline and the targets of issue 15 (p50 within 1.5x of
  raw, throughput with 64 in flight at least 80% of raw), measured in the same run.

The machine's load drifts (other jobs share it), so every subject is opened
first and then measured in interleaved rounds: latency in 20 chunks per
subject, one rate run per subject per round.

Reading the figures (issue 15, measured 2026-12): one zag call costs exactly
the broker traffic of "raw zag-like": one request publish whose confirm the
engine awaits, one reply publish whose confirm the worker awaits before its
ack, one ack; no declare, no reply-queue set-up and, without tracing hooks,
no trace work per call (counted on aiormq's channel methods). A quorum queue
hands a message to its consumer only once the Raft log has it, so the request
leg alone takes about as long as a whole classic round trip: "raw zag-like / raw baseline"
is the price of zag's guarantees (replicated, fsynced requests; poison
requests dead-lettered after x-delivery-limit), and "zag / raw zag-like" is
zag's own share. The what-if rows show what dropping each would buy.

Small CLI for the subprocesses and for digging::

    python benchmarks/remote.py echo --queue Q [--queue-type quorum] [--no-confirms]
    python benchmarks/remote.py worker --topic T [--whatif classic,transient]
    python benchmarks/remote.py profile [--workers 1] [--concurrency 64] [--n 1000] [--whatif ...]
        # the wide flow with cProfile on the engine and py-spy (when installed) on the worker
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import cProfile
import dataclasses
import gc
import io
import os
import pstats
import shutil
import signal
import statistics
import subprocess
import sys
import time
import types
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import Plan, Recorder, check, clock

HERE = Path(__file__).resolve().parent
URL = "amqp://guest:guest@127.0.0.1/"
SCENARIO = "REMOTE"
BODY = b"x" * 200  # about the size of a zag request for a no-op task
P50_TARGET = 1.5  # zag p50 / raw p50 at most this
RATE_TARGET = 0.80  # zag throughput / raw throughput at least this


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Sizes:
    seq_n: int = 2000  # raw sequential round trips
    rr_n: int = 1000  # raw round trips at concurrency 64, per repeat
    oneway_n: int = 2000  # raw one-way messages per repeat
    repeats: int = 3
    rounds: int = 20  # latency samples are taken in this many interleaved chunks
    zag_seq_n: int = 1000  # sequential one-atom flows
    whatif_seq_n: int = 500  # sequential one-atom flows per what-if case
    zag_wide_n: int = 1000  # atoms in the wide flow
    zag_flows_n: int = 1000  # one-atom flows, 64 at once
    variants: bool = True  # every raw variant and the what-ifs, not just baseline and zag-like


QUICK = Sizes(
    seq_n=300,
    rr_n=1000,
    oneway_n=1000,
    repeats=1,
    rounds=4,
    zag_seq_n=200,
    whatif_seq_n=100,
    zag_wide_n=300,
    zag_flows_n=300,
    variants=False,
)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


# --------------------------------------------------------------------------- raw aio-pika


@dataclass(frozen=True)
class Variant:
    """One broker configuration of the raw request/reply loop."""

    name: str
    queue_type: str = "classic"
    persistent: bool = False
    confirms: bool = True  # publisher confirms on both sides' channels
    note: str = ""


BASELINE = Variant("raw baseline", note="classic queue, transient, confirms on (aio-pika default)")
VARIANTS = (
    BASELINE,
    Variant(
        "raw no confirms", confirms=False, note="classic, transient, channels without confirms"
    ),
    Variant("raw persistent", persistent=True, note="classic queue, persistent messages"),
    Variant(
        "raw quorum persistent",
        queue_type="quorum",
        persistent=True,
        note="quorum queue, persistent (zag's request path)",
    ),
    Variant(
        "raw quorum no confirms",
        queue_type="quorum",
        persistent=True,
        confirms=False,
        note="quorum, persistent, no confirms on either channel",
    ),
    Variant(
        "raw zag-like",
        queue_type="quorum",
        persistent=True,
        note="quorum + persistent + confirms: zag's message pattern",
    ),
)


async def declare_queue(channel: Any, name: str, queue_type: str) -> Any:
    if queue_type == "quorum":
        return await channel.declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})
    return await channel.declare_queue(name, durable=True)


async def echo_main(args: argparse.Namespace) -> None:
    """The raw echo consumer (subprocess): reply to reply_to with the body, then ack."""
    import aio_pika

    connection = await aio_pika.connect_robust(args.url)
    channel = await connection.channel(publisher_confirms=not args.no_confirms)
    await channel.set_qos(prefetch_count=args.prefetch)
    queue = await declare_queue(channel, args.queue, args.queue_type)
    exchange = channel.default_exchange

    async def on_message(message: Any) -> None:
        await exchange.publish(
            aio_pika.Message(message.body, correlation_id=message.correlation_id),
            routing_key=message.reply_to,
        )
        await message.ack()

    await queue.consume(on_message)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("echo ready", flush=True)
    await stop.wait()
    await connection.close()


class RpcClient:
    """A request/reply client: one exclusive reply queue, futures by correlation id."""

    def __init__(self, variant: Variant, queue: str) -> None:
        self.variant = variant
        self.queue = queue
        self.futures: dict[str, asyncio.Future[bytes]] = {}

    async def __aenter__(self) -> RpcClient:
        import aio_pika

        self.connection = await aio_pika.connect_robust(URL)
        self.channel = await self.connection.channel(publisher_confirms=self.variant.confirms)
        self.reply = await self.channel.declare_queue(exclusive=True, auto_delete=True)
        await self.reply.consume(self._on_reply, no_ack=True)
        self.exchange = self.channel.default_exchange
        self.mode = (
            aio_pika.DeliveryMode.PERSISTENT
            if self.variant.persistent
            else aio_pika.DeliveryMode.NOT_PERSISTENT
        )
        self.message = aio_pika.Message
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.connection.close()

    async def _on_reply(self, message: Any) -> None:
        future = self.futures.pop(message.correlation_id, None)
        if future is not None and not future.done():
            future.set_result(message.body)

    async def call(self, body: bytes = BODY) -> bytes:
        cid = uuid.uuid4().hex
        future = asyncio.get_running_loop().create_future()
        self.futures[cid] = future
        await self.exchange.publish(
            self.message(
                body, correlation_id=cid, reply_to=self.reply.name, delivery_mode=self.mode
            ),
            routing_key=self.queue,
        )
        return await future


@contextlib.asynccontextmanager
async def echo_process(variant: Variant, queue: str, prefetch: int = 64) -> Any:
    cmd = [
        sys.executable,
        str(HERE / "remote.py"),
        "echo",
        "--queue",
        queue,
        "--queue-type",
        variant.queue_type,
        "--prefetch",
        str(prefetch),
    ]
    if not variant.confirms:
        cmd.append("--no-confirms")
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(30):
            line = await proc.stdout.readline()
        if b"ready" not in line:
            raise RuntimeError(f"echo process did not start: {line!r}")
        yield proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(10):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def _delete_queues(*names: str) -> None:
    import aio_pika

    connection = await aio_pika.connect_robust(URL)
    async with connection:
        for name in names:
            channel = await connection.channel()
            with contextlib.suppress(Exception):
                await channel.queue_delete(name)
            with contextlib.suppress(Exception):
                await channel.close()


async def _concurrently(n: int, concurrency: int, one: Callable[[], Awaitable[Any]]) -> float:
    """Run `one` n times with `concurrency` loops; return the wall time."""
    left = n

    async def loop() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await one()

    t0 = clock()
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    return clock() - t0


# --------------------------------------------------------------------------- zag


#: What-if changes to zag's message pattern, applied by monkeypatching (zag itself is unchanged):
#: "classic" the topic queue is a durable
#: classic queue (no x-delivery-limit); "transient" requests are not persistent; "raceconfirm"
#: the engine does not wait for the request's publisher confirm before taking the result (the
#: confirm is awaited in the background and fails the request if it fails); "noconfirms" no
#: publisher confirms on either side's channel.
WHATIFS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("what-if: none (zag as is)", ()),
    ("what-if: classic queue", ("classic",)),
    ("what-if: classic, confirm raced", ("classic", "raceconfirm")),
    ("what-if: classic + transient", ("classic", "transient")),
)


def _counted(executor: Any, kind: str) -> None:
    counts = executor.__dict__.setdefault("_bench_counts", collections.Counter())
    counts[kind] += 1


COUNTING = False  # the counters parse every response a second time: on only in a counting pass


def install_counters() -> None:
    """Count requests published and responses received (by kind) per RemoteExecutor.

    The counters hook private methods: where this revision of zag_async (see
    ``run.py --baseline``) has none of that name, messages go uncounted.
    """
    import zag_async as zag

    executor_class = zag.RemoteExecutor
    try:
        from zag_async.workers.protocol import Response

        publish, on_response = executor_class._publish, executor_class._on_response
    except (ImportError, AttributeError) as exc:
        log(f"zag: REMOTE messages per request not counted ({type(exc).__name__}: {exc})")
        return
    if getattr(executor_class, "_bench_counted", False):
        return

    async def counted_publish(self: Any, *args: Any, **kwargs: Any) -> None:
        if COUNTING:
            _counted(self, "request")
        await publish(self, *args, **kwargs)

    async def counted_response(self: Any, message: Any) -> None:
        if COUNTING:
            with contextlib.suppress(Exception):
                _counted(self, Response.loads(message.body, self.codec).kind)
        await on_response(self, message)

    executor_class._publish = counted_publish  # type: ignore[method-assign]
    executor_class._on_response = counted_response  # type: ignore[method-assign]
    executor_class._bench_counted = True  # type: ignore[attr-defined]


def whatif_patches(flags: tuple[str, ...]) -> list[tuple[Any, str, Any]]:
    """(object, attribute, replacement) for the process-wide what-if flags."""
    patches: list[tuple[Any, str, Any]] = []
    if not flags:  # zag as it is: nothing of its internals is touched
        return patches
    from aio_pika.robust_connection import RobustConnection

    try:
        from zag_async.workers import topology
    except ImportError:  # a revision from before the split: one amqp module
        from zag_async.workers import amqp as topology  # type: ignore[no-redef]

    if "classic" in flags:
        declare = topology.declare_topology

        async def classic_topology(channel: Any, topics: Any, delivery_limit: int) -> Any:
            # Everything but the topic queues. declare_topology returns (work exchange,
            # queues by topic) today and returned the exchange alone before: keep the shape.
            declared = await declare(channel, [], delivery_limit)
            work = declared[0] if isinstance(declared, tuple) else declared
            queues = {}
            for topic in topics:
                queue = await channel.declare_queue(
                    f"zag.q.{topic}",
                    durable=True,
                    arguments={"x-dead-letter-exchange": topology.DEAD},
                )
                await queue.bind(work, routing_key=topic)
                queues[topic] = queue
            return (work, queues) if isinstance(declared, tuple) else work

        # Worker and RemoteExecutor look it up in the topology module at each call.
        patches.append((topology, "declare_topology", classic_topology))
    if "noconfirms" in flags:
        channel = RobustConnection.channel

        def no_confirms(
            self: Any,
            channel_number: int | None = None,
            publisher_confirms: bool = True,
            on_return_raises: bool = False,
        ) -> Any:
            return channel(self, channel_number, False, on_return_raises)

        patches.append((RobustConnection, "channel", no_confirms))
    return patches


@contextlib.contextmanager
def patched(patches: list[tuple[Any, str, Any]]) -> Any:
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in patches]
    for obj, name, value in patches:
        setattr(obj, name, value)
    try:
        yield
    finally:
        for obj, name, value in reversed(saved):
            setattr(obj, name, value)


async def _transient_publish(self: Any, body: bytes, rid: str, topic: str, delay: float) -> None:
    """RemoteExecutor._publish without the persistent flag (what-if "transient")."""
    import aio_pika

    if COUNTING:
        _counted(self, "request")
    await self._work.publish(
        aio_pika.Message(
            body,
            correlation_id=rid,
            reply_to=self._reply_name,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT,
        ),
        routing_key=topic,
    )


def _raced_publish(publish: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """RemoteExecutor._publish that returns at once; the confirm is awaited in the background."""
    background: set[asyncio.Future[None]] = set()

    async def raced(self: Any, body: bytes, rid: str, topic: str, delay: float) -> None:
        future = asyncio.ensure_future(publish(body, rid, topic, delay))
        background.add(future)

        def done(f: asyncio.Future[None]) -> None:
            background.discard(f)
            pending = self._pending.get(rid)
            if f.exception() is not None and pending is not None and not pending.future.done():
                pending.future.set_exception(f.exception())

        future.add_done_callback(done)

    return raced


async def worker_main(args: argparse.Namespace) -> None:
    """A zag worker with what-if patches (the plain case uses `python -m zag_async worker`)."""
    import remote_tasks

    from zag_async import Worker

    with patched(whatif_patches(tuple(f for f in args.whatif.split(",") if f))):
        async with Worker(
            args.url, topic=args.topic, tasks=remote_tasks.TASKS, concurrency=args.concurrency
        ) as worker:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, worker.stop)
            print(f"worker {worker.name} serving (what-if {args.whatif or 'none'})", flush=True)
            await worker.serve()


async def _stop(procs: list[asyncio.subprocess.Process]) -> None:
    for proc in procs:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            async with asyncio.timeout(15):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def zag_setup(
    stack: contextlib.AsyncExitStack, workers: int, concurrency: int, flags: tuple[str, ...] = ()
) -> Any:
    """Worker subprocesses on a fresh topic, and an open RemoteExecutor that sees them all.

    Without what-if flags the workers are the real CLI, `python -m zag_async worker`.
    """
    import zag_async as zag

    topic = f"bench-{uuid.uuid4().hex[:8]}"
    stack.push_async_callback(_delete_queues, f"zag.q.{topic}")
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p),
    )
    if flags:
        cmd = [
            sys.executable,
            str(HERE / "remote.py"),
            "worker",
            "--topic",
            topic,
            "--concurrency",
            str(concurrency),
            "--whatif",
            ",".join(flags),
        ]
    else:
        cmd = [
            sys.executable,
            "-m",
            "zag_async",
            "worker",
            "--topic",
            topic,
            "--url",
            URL,
            "--concurrency",
            str(concurrency),
            "remote_tasks:TASKS",
        ]
    procs = []
    stack.push_async_callback(_stop, procs)
    for _ in range(workers):
        procs.append(
            await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE, env=env)
        )
    for proc in procs:
        assert proc.stdout is not None
        async with asyncio.timeout(30):
            line = await proc.stdout.readline()
        if b"serving" not in line:
            raise RuntimeError(f"worker did not start: {line!r}")
    with patched(whatif_patches(flags)):
        executor = await stack.enter_async_context(
            zag.RemoteExecutor(URL, topics=[topic], discovery_timeout=10.0)
        )
    if "transient" in flags:
        executor._publish = types.MethodType(_transient_publish, executor)
    if "raceconfirm" in flags:
        executor._publish = types.MethodType(_raced_publish(executor._publish), executor)
    async with asyncio.timeout(15):
        # Discovery has no public "changed" event: poll the live-worker table.
        while len(executor.workers()) < workers:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    return executor, procs


def _noop() -> Any:
    import remote_tasks

    return remote_tasks.noop


def one_flow_call(ex: Any) -> Callable[[], Awaitable[None]]:
    """One-atom flow, fresh flow and Engine each call."""
    import zag_async as zag

    noop = _noop()

    async def call() -> None:
        engine = zag.Engine(zag.linear("remote-1", noop), executor=ex)
        await engine.run()
        check(engine.state == zag.FlowState.SUCCESS, f"flow ended {engine.state}")

    return call


def local_call() -> Callable[[], Awaitable[None]]:
    """The same one-atom flow run in-process (no executor): the engine's own share."""
    import zag_async as zag

    noop = _noop()

    async def call() -> None:
        engine = zag.Engine(zag.linear("local-1", noop))
        await engine.run()
        check(engine.state == zag.FlowState.SUCCESS, f"flow ended {engine.state}")

    return call


def direct_call(ex: Any) -> Callable[[], Awaitable[None]]:
    """RemoteExecutor.execute awaited directly: no engine."""
    noop = _noop()

    async def call() -> None:
        value = await ex.execute(noop, "noop", "direct", {}, time_limit=None, delay=0.0)
        check(value == 1, f"execute returned {value!r}")

    return call


def wide_rate(ex: Any) -> Callable[[int], Awaitable[float]]:
    """Atoms/s of one unordered flow of n remote no-op atoms (engine concurrency unbounded)."""
    import zag_async as zag

    noop = _noop()

    async def run(n: int) -> float:
        flow = zag.unordered("wide", *(noop.bind(name=f"n{k}") for k in range(n)))
        t0 = clock()
        engine = zag.Engine(flow, executor=ex)
        await engine.run()
        elapsed = clock() - t0
        check(engine.state == zag.FlowState.SUCCESS, f"wide flow ended {engine.state}")
        return n / elapsed

    return run


def flows_rate(ex: Any, concurrency: int) -> Callable[[int], Awaitable[float]]:
    """Flows/s (= atoms/s) of n one-atom flows, `concurrency` Engines at once."""
    one = one_flow_call(ex)

    async def run(n: int) -> float:
        return n / await _concurrently(n, concurrency, one)

    return run


def execute_rate(ex: Any, concurrency: int) -> Callable[[int], Awaitable[float]]:
    """Requests/s of n `executor.execute` calls, `concurrency` at once (no engine)."""
    one = direct_call(ex)

    async def run(n: int) -> float:
        return n / await _concurrently(n, concurrency, one)

    return run


def rr_rate(client: RpcClient) -> Callable[[int], Awaitable[float]]:
    async def run(n: int) -> float:
        return n / await _concurrently(n, 64, client.call)

    return run


async def oneway_subject(
    stack: contextlib.AsyncExitStack, client: RpcClient, variant: Variant
) -> Callable[[int], Awaitable[float]]:
    """Messages/s from publish (64 in flight) to consumed, on a queue a 2nd connection reads."""
    import aio_pika

    queue = f"{client.queue}.oneway"
    stack.push_async_callback(_delete_queues, queue)
    await declare_queue(client.channel, queue, variant.queue_type)
    consumer = await aio_pika.connect_robust(URL)
    stack.push_async_callback(consumer.close)
    channel = await consumer.channel()
    await channel.set_qos(prefetch_count=256)
    q = await channel.get_queue(queue, ensure=False)
    state = {"got": 0, "want": 0}
    done = asyncio.Event()

    async def on_message(message: Any) -> None:
        await message.ack()
        state["got"] += 1
        if state["got"] >= state["want"]:
            done.set()

    await q.consume(on_message)

    async def publish() -> None:
        await client.exchange.publish(
            aio_pika.Message(BODY, delivery_mode=client.mode), routing_key=queue
        )

    async def run(n: int) -> float:
        state.update(got=0, want=n)
        done.clear()
        t0 = clock()
        await _concurrently(n, 64, publish)
        async with asyncio.timeout(60):
            await done.wait()
        return n / (clock() - t0)

    return run


CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def proc_cpu(pid: int) -> float:
    """User+system CPU seconds of a process so far (Linux /proc), 0.0 if unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return 0.0


def broker_pid() -> int | None:
    """The process listening on 127.0.0.1:5672 (beam.smp), when `ss` can tell."""
    try:
        out = subprocess.run(
            ["ss", "-ltnpH", "sport = :5672"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    _, _, rest = out.partition("pid=")
    digits = rest.split(",")[0]
    return int(digits) if digits.isdigit() else None


@dataclass
class Subject:
    """Something measured: sequential calls (latency) and/or runs returning a rate."""

    case: str
    call: Callable[[], Awaitable[Any]] | None = None
    calls: int = 0  # sequential calls in total (split over the rounds)
    rate: Callable[[int], Awaitable[float]] | None = None
    rate_metric: str = ""
    note: str = ""
    rate_note: str = ""
    executor: Any = None
    per_run: int = 0  # requests per rate run
    pids: list[int] = field(default_factory=list)  # the echo / worker processes
    latencies: list[float] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)
    cpu: collections.Counter[str] = field(default_factory=collections.Counter)


async def session(sizes: Sizes) -> tuple[list[Subject], dict[str, str]]:
    """Open everything, then measure the subjects in interleaved rounds.

    The machine is shared and its load drifts: every round measures every
    subject once (latency chunks of N/rounds calls; one rate run each), so
    drift hits raw and zag alike.
    """
    install_counters()
    failed: dict[str, str] = {}
    subjects: list[Subject] = []
    async with contextlib.AsyncExitStack() as stack:
        variants = VARIANTS if sizes.variants else (BASELINE, VARIANTS[-1])
        for variant in variants:
            log(f"zag: REMOTE starting {variant.name}")
            queue = f"zag-bench.raw.{uuid.uuid4().hex[:8]}"
            stack.push_async_callback(_delete_queues, queue)
            client = await stack.enter_async_context(RpcClient(variant, queue))
            await declare_queue(client.channel, queue, variant.queue_type)
            echo = await stack.enter_async_context(echo_process(variant, queue))
            subjects.append(
                Subject(
                    variant.name,
                    call=client.call,
                    calls=sizes.seq_n,
                    per_run=sizes.rr_n,
                    pids=[echo.pid],
                    rate=rr_rate(client),
                    rate_metric="req/reply c=64",
                    note=variant.note,
                    rate_note=f"{sizes.rr_n} round trips, 64 in flight, echo prefetch 64",
                )
            )
            subjects.append(
                Subject(
                    variant.name,
                    rate=await oneway_subject(stack, client, variant),
                    rate_metric="one way",
                    per_run=sizes.oneway_n,
                    rate_note=f"{sizes.oneway_n} messages, 64 publishes in flight, "
                    "consumer acks (prefetch 256)",
                )
            )
        setups = [
            ("zag 1 worker c=8", 1, 8, ()),
            ("zag 1 worker c=64", 1, 64, ()),
            ("zag 4 workers c=16", 4, 16, ()),
        ]
        if sizes.variants:
            setups += [(name, 1, 64, flags) for name, flags in WHATIFS[1:]]
        executors = {}
        pids: dict[Any, list[int]] = {}
        for name, workers, conc, flags in setups:
            log(f"zag: REMOTE starting {name}")
            try:
                executors[name], procs = await zag_setup(stack, workers, conc, flags)
                pids[executors[name]] = [p.pid for p in procs]
            except Exception as exc:
                failed[name] = f"{type(exc).__name__}: {exc}"
        n = sizes.zag_wide_n
        if ex := executors.get("zag 1 worker c=8"):
            subjects.append(
                Subject(
                    "zag 1 worker, sequential",
                    call=one_flow_call(ex),
                    calls=sizes.zag_seq_n,
                    note="one-atom flows: fresh flow + Engine(...) + run(); worker concurrency 8",
                    executor=ex,
                )
            )
            subjects.append(
                Subject(
                    "zag local one-atom flow (no broker)",
                    call=local_call(),
                    calls=sizes.zag_seq_n,
                    note="same flow, default in-process executor: the engine's share",
                )
            )
            subjects.append(
                Subject(
                    "zag executor.execute (no engine)",
                    call=direct_call(ex),
                    calls=sizes.zag_seq_n,
                    note="RemoteExecutor.execute awaited directly, same worker",
                )
            )
            subjects.append(
                Subject(
                    "zag wide flow, 1 worker c=8",
                    rate=wide_rate(ex),
                    rate_metric="atoms/s",
                    executor=ex,
                    rate_note=f"one unordered flow of {n} atoms; worker default concurrency 8",
                )
            )
        if ex := executors.get("zag 1 worker c=64"):
            subjects.append(
                Subject(
                    "zag wide flow, 1 worker c=64",
                    rate=wide_rate(ex),
                    rate_metric="atoms/s",
                    executor=ex,
                    rate_note=f"one unordered flow of {n} atoms",
                )
            )
            subjects.append(
                Subject(
                    "zag 64 concurrent flows, 1 worker c=64",
                    rate=flows_rate(ex, 64),
                    rate_metric="atoms/s",
                    executor=ex,
                    rate_note=f"{sizes.zag_flows_n} one-atom flows, 64 Engines at once",
                )
            )
            subjects.append(
                Subject(
                    "zag 64 executor.execute in flight, 1 worker c=64",
                    rate=execute_rate(ex, 64),
                    rate_metric="atoms/s",
                    executor=ex,
                    rate_note=f"{sizes.zag_flows_n} RemoteExecutor.execute calls, 64 at once "
                    "(no engine): the transport's own rate",
                )
            )
            if sizes.variants:
                subjects.append(
                    Subject(
                        WHATIFS[0][0],
                        call=one_flow_call(ex),
                        calls=sizes.whatif_seq_n,
                        rate=wide_rate(ex),
                        rate_metric="atoms/s",
                        executor=ex,
                        note="1 worker c=64 (python -m zag_async worker)",
                        rate_note=f"wide flow of {n} atoms",
                    )
                )
        if ex := executors.get("zag 4 workers c=16"):
            subjects.append(
                Subject(
                    "zag wide flow, 4 workers c=16",
                    rate=wide_rate(ex),
                    rate_metric="atoms/s",
                    executor=ex,
                    rate_note=f"one unordered flow of {n} atoms; 4 worker processes x 16",
                )
            )
        for name, flags in WHATIFS[1:]:
            if ex := executors.get(name):
                subjects.append(
                    Subject(
                        name,
                        call=one_flow_call(ex),
                        calls=sizes.whatif_seq_n,
                        rate=wide_rate(ex),
                        rate_metric="atoms/s",
                        executor=ex,
                        note="1 worker c=64; patched: " + ", ".join(flags),
                        rate_note=f"wide flow of {n} atoms",
                    )
                )

        for s in subjects:
            if s.rate is not None and s.rate_metric == "atoms/s":
                s.per_run = sizes.zag_flows_n if " 64 " in s.case else n
                s.pids = pids.get(s.executor, [])
        log("zag: REMOTE warm-up")
        for s in subjects:
            if s.call is not None:
                for _ in range(min(100, s.calls)):
                    await s.call()
            if s.rate is not None:
                await s.rate(max(64, s.per_run // 5))
        for r in range(sizes.rounds):
            if r % 5 == 0:
                log(f"zag: REMOTE latency round {r + 1}/{sizes.rounds}")
            gc.collect()
            for s in subjects:
                if s.call is None:
                    continue
                chunk = s.calls // sizes.rounds
                for _ in range(chunk):
                    t0 = clock()
                    await s.call()
                    s.latencies.append(clock() - t0)
        broker = broker_pid()
        for r in range(sizes.repeats):
            log(f"zag: REMOTE throughput round {r + 1}/{sizes.repeats}")
            for s in subjects:
                if s.rate is not None:
                    gc.collect()
                    before = (
                        time.process_time(),
                        sum(map(proc_cpu, s.pids)),
                        proc_cpu(broker) if broker else 0.0,
                    )
                    s.rates.append(await s.rate(s.per_run))
                    s.cpu["engine"] += time.process_time() - before[0]
                    s.cpu["worker"] += sum(map(proc_cpu, s.pids)) - before[1]
                    if broker:
                        s.cpu["broker"] += proc_cpu(broker) - before[2]
                    s.cpu["requests"] += s.per_run
        # Messages per request, in an untimed pass (the counters parse every response again).
        global COUNTING
        COUNTING = True
        try:
            for s in subjects:
                if s.call is not None and s.executor is not None:
                    s.executor.__dict__.pop("_bench_counts", None)
                    for _ in range(100):
                        await s.call()
                    s.executor.__dict__["_bench_seq_counts"] = dict(
                        s.executor.__dict__.pop("_bench_counts", {})
                    )
        finally:
            COUNTING = False
        log("zag: REMOTE closing")
    return subjects, failed


# --------------------------------------------------------------------------- scenario


def rabbit_reachable() -> str | None:
    try:
        import aio_pika  # noqa: F401
    except ImportError as exc:
        return f"{exc} (the bench session must install zag-async[amqp])"

    async def probe() -> None:
        import aio_pika

        async with asyncio.timeout(5):
            connection = await aio_pika.connect(URL)
            await connection.close()

    try:
        asyncio.run(probe())
    except Exception as exc:
        return f"RabbitMQ at {URL}: {type(exc).__name__}: {exc}"
    return None


ENDS = {
    "engine": ("engine", "client"),
    "worker": ("workers", "echo"),
    "broker": ("broker", "broker"),
}


def _verdict(ratio: float, target: float, higher_is_better: bool) -> str:
    ok = ratio >= target if higher_is_better else ratio <= target
    sign = ">=" if higher_is_better else "<="
    return f"target {sign} {target:g}x: {'MET' if ok else 'MISSED'}"


#: Set by ``run.py --baseline``: zag as it is and the two raw controls (baseline, zag-like),
#: no other raw variants and no what-ifs (they patch internals another revision may not have).
COMPARE_ONLY = False


def zag_scenario(rec: Recorder, plan: Plan) -> None:
    """The zag side of REMOTE (run.py calls it with the zag Recorder)."""
    sizes = QUICK if plan == Plan.quick() else Sizes()
    if COMPARE_ONLY:
        sizes = dataclasses.replace(sizes, variants=False)
    why = rabbit_reachable()
    if why:
        rec.missing(SCENARIO, "all", "round trip p50", "ms", f"skipped: {why}")
        return
    subjects, failed = asyncio.run(session(sizes))
    for case, reason in failed.items():
        rec.missing(SCENARIO, case, "scenario", "", f"failed: {reason}")

    p50: dict[str, float] = {}
    rate: dict[str, float] = {}
    cpu: dict[str, float] = {}
    for s in subjects:
        if s.latencies:
            ms = [v * 1e3 for v in s.latencies]
            p50[s.case] = statistics.median(ms)
            rec.add(
                SCENARIO,
                s.case,
                "round trip p50",
                "ms",
                [p50[s.case]],
                f"{len(ms)} sequential; {s.note}",
            )
            rec.add(SCENARIO, s.case, "round trip p95", "ms", [percentile(ms, 95)])
            rec.add(SCENARIO, s.case, "round trip p99", "ms", [percentile(ms, 99)])
        if s.rates:
            rec.add(SCENARIO, s.case, s.rate_metric, "1/s", s.rates, s.rate_note)
            if s.rate_metric != "one way":
                rate[s.case] = statistics.median(s.rates)
        if s.cpu["requests"] and s.rate_metric != "one way":
            per_request = {
                k: v * 1e6 / s.cpu["requests"] for k, v in s.cpu.items() if k != "requests"
            }
            cpu[s.case] = sum(per_request.values())
            rec.add(
                SCENARIO,
                s.case,
                "CPU per request",
                "µs",
                [cpu[s.case]],
                "during the rate runs: "
                + ", ".join(
                    f"{ENDS[k][s.case.startswith('raw')]} {v:,.0f}" for k, v in per_request.items()
                ),
            )
        counts = s.executor.__dict__.get("_bench_seq_counts") if s.executor else None
        if counts and counts.get("request"):
            requests = counts.pop("request")
            per = {k: v / requests for k, v in sorted(counts.items())}
            rec.add(
                SCENARIO,
                s.case,
                "messages per request",
                "msg",
                [1 + sum(per.values())],
                "1 request + replies: " + ", ".join(f"{k} {v:.2f}" for k, v in per.items()),
            )

    base_p50, base_rate = p50.get(BASELINE.name), rate.get(BASELINE.name)
    if base_p50 is None or base_rate is None:
        return
    base_cpu = cpu.get(BASELINE.name)
    for s in subjects:
        if s.case == BASELINE.name:
            continue
        zag_case = s.case.startswith(("zag", "what-if")) and "local" not in s.case
        if s.case in p50 and s.latencies:
            ratio = p50[s.case] / base_p50
            note = _verdict(ratio, P50_TARGET, higher_is_better=False) if zag_case else ""
            rec.add(SCENARIO, s.case, "p50 / raw baseline p50", "x", [ratio], note)
        if s.case in rate and s.rates and s.rate_metric != "one way":
            ratio = rate[s.case] / base_rate
            note = _verdict(ratio, RATE_TARGET, higher_is_better=True) if zag_case else ""
            rec.add(SCENARIO, s.case, "rate / raw baseline c=64", "x", [ratio], note)
        if base_cpu and s.case in cpu and s.rate_metric != "one way":
            ratio = base_cpu / cpu[s.case]
            note = "load-independent: throughput on a CPU-bound box scales with 1/CPU"
            if zag_case:
                note = f"{_verdict(ratio, RATE_TARGET, higher_is_better=True)}; {note}"
            rec.add(SCENARIO, s.case, "raw CPU / CPU per request", "x", [ratio], note)
    zag_like = p50.get(VARIANTS[-1].name)
    if zag_like and "zag 1 worker, sequential" in p50:
        rec.add(
            SCENARIO,
            "zag 1 worker, sequential",
            "p50 / raw zag-like p50",
            "x",
            [p50["zag 1 worker, sequential"] / zag_like],
            "zag's own overhead: the broker cost of its message pattern taken out",
        )
    if zag_like and "zag executor.execute (no engine)" in p50:
        rec.add(
            SCENARIO,
            "zag executor.execute (no engine)",
            "p50 / raw zag-like p50",
            "x",
            [p50["zag executor.execute (no engine)"] / zag_like],
            "the transport's own overhead: no engine, the broker cost of its pattern out",
        )
    zag_like_rate = rate.get(VARIANTS[-1].name)
    if zag_like_rate and "zag wide flow, 1 worker c=64" in rate:
        rec.add(
            SCENARIO,
            "zag wide flow, 1 worker c=64",
            "rate / raw zag-like c=64",
            "x",
            [rate["zag wide flow, 1 worker c=64"] / zag_like_rate],
            "zag's own overhead: the broker cost of its message pattern taken out",
        )
    execute_case = "zag 64 executor.execute in flight, 1 worker c=64"
    if zag_like_rate and execute_case in rate:
        rec.add(
            SCENARIO,
            execute_case,
            "rate / raw zag-like c=64",
            "x",
            [rate[execute_case] / zag_like_rate],
            "the transport's own overhead: no engine, the broker cost of its pattern out",
        )


# --------------------------------------------------------------------------- profile


async def profile_main(args: argparse.Namespace) -> None:
    """The wide flow under cProfile (engine) and py-spy (worker, when installed)."""
    install_counters()
    flags = tuple(f for f in args.whatif.split(",") if f)
    async with contextlib.AsyncExitStack() as stack:
        ex, procs = await zag_setup(stack, args.workers, args.concurrency, flags)
        wide = wide_rate(ex)
        await wide(args.n)  # warm-up
        spies = []
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if os.path.exists(py_spy):  # noqa: ASYNC240 - once, before measuring
            for k, proc in enumerate(procs):
                out = Path(args.out) / f"worker{k}.txt"
                spies.append(
                    await asyncio.create_subprocess_exec(
                        py_spy,
                        "record",
                        "-p",
                        str(proc.pid),
                        "-f",
                        "raw",
                        "-o",
                        str(out),
                        "-d",
                        str(args.seconds),
                        "-r",
                        "200",
                        stdout=asyncio.subprocess.DEVNULL,
                        stderr=asyncio.subprocess.DEVNULL,
                    )
                )
            await asyncio.sleep(1.0)
        profiler = cProfile.Profile()
        profiler.enable()
        t_end = clock() + args.seconds - 1.5
        done = 0
        t0 = clock()
        while clock() < t_end:
            await wide(args.n)
            done += args.n
        elapsed = clock() - t0
        profiler.disable()
        print(
            f"{done} atoms in {elapsed:.2f} s: {done / elapsed:.0f} atoms/s (engine under cProfile)"
        )
        stream = io.StringIO()
        pstats.Stats(profiler, stream=stream).sort_stats("tottime").print_stats(args.top)
        print(stream.getvalue())
        for spy in spies:
            await spy.wait()
    for k in range(len(spies)):
        path = Path(args.out) / f"worker{k}.txt"
        if path.exists():
            print(f"worker {k} py-spy, self time by function ({path}):")
            print(_collapse(path, args.top))


def _collapse(path: Path, top: int) -> str:
    """Self time by innermost frame from a py-spy raw (collapsed stacks) file."""
    self_time: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        self_time[stack.split(";")[-1]] += int(count)
        total += int(count)
    return "\n".join(
        f"  {n * 100 / max(total, 1):5.1f}%  {frame}" for frame, n in self_time.most_common(top)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    echo = sub.add_parser("echo", help="the raw echo consumer")
    echo.add_argument("--queue", required=True)
    echo.add_argument("--queue-type", default="classic", choices=("classic", "quorum"))
    echo.add_argument("--prefetch", type=int, default=64)
    echo.add_argument("--no-confirms", action="store_true")
    echo.add_argument("--url", default=URL)
    worker = sub.add_parser("worker", help="a zag worker with what-if patches")
    worker.add_argument("--topic", required=True)
    worker.add_argument("--concurrency", type=int, default=8)
    worker.add_argument(
        "--whatif", default="", help="comma-separated: classic,transient,noconfirms,raceconfirm"
    )
    worker.add_argument("--url", default=URL)
    prof = sub.add_parser("profile", help="profile the wide flow (engine + workers)")
    prof.add_argument("--workers", type=int, default=1)
    prof.add_argument("--concurrency", type=int, default=64)
    prof.add_argument("--n", type=int, default=1000)
    prof.add_argument("--seconds", type=int, default=8)
    prof.add_argument("--whatif", default="", help="what-if flags for workers and engine")
    prof.add_argument("--top", type=int, default=30)
    prof.add_argument("--out", default="/tmp")
    args = parser.parse_args(argv)
    if args.command == "echo":
        asyncio.run(echo_main(args))
    elif args.command == "worker":
        asyncio.run(worker_main(args))
    elif args.command == "profile":
        asyncio.run(profile_main(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
