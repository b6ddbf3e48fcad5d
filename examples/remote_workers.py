"""The same flow run locally, then on two remote worker processes over RabbitMQ.

Only the engine's `executor=` changes. Two workers are started as separate
processes (`python -m zag_async worker ...`); the flow's tasks run there,
one of them fails once and is retried, and the results are identical.

    python examples/remote_workers.py [amqp://guest:guest@127.0.0.1/]
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from pathlib import Path

import zag_async as zag

ATTEMPTS: dict[str, int] = {}


@zag.task(provides="text")
async def fetch(doc: str) -> str:
    return f"{doc}: the quick brown fox jumps over the lazy dog"


@zag.task(provides="words")
def split(text: str) -> list[str]:  # a plain def: runs in a worker thread
    return text.split(": ", 1)[1].split()


@zag.task(provides="longest", retry=zag.retry.Times(3, delay=0.1))
async def longest(words: list[str]) -> str:
    # Fails the first time in each process, to show a retry (delayed by the broker remotely).
    ATTEMPTS["longest"] = ATTEMPTS.get("longest", 0) + 1
    if ATTEMPTS["longest"] == 1:
        raise ConnectionError("flaky dictionary service")
    return max(words, key=len)


@zag.task(provides="count")
async def count(words: list[str]) -> int:
    return len(words)


TASKS = [fetch, split, longest, count]


def build() -> zag.Flow:
    return zag.linear("analyse", fetch, split, zag.unordered("stats", longest, count))


async def main(url: str) -> None:
    # Workers name tasks by import path: build the flow from the importable module
    # (this script runs as __main__), so both sides agree on "remote_workers:fetch".
    import remote_workers

    store = {"doc": "pangram.txt"}
    local = await zag.run(remote_workers.build(), store=store)
    print("local :", {k: local[k] for k in sorted(local)})

    topic = f"example-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])}
    workers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "zag_async",
            "worker",
            "--topic",
            topic,
            "--url",
            url,
            "remote_workers:TASKS",
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
        )
        for _ in range(2)
    ]
    try:
        async with zag.RemoteExecutor(url, topics=[topic], discovery_timeout=20) as executor:
            async with asyncio.timeout(20):
                await executor.wait_for_workers(2)  # both up, so the flow spreads over them
            flow = remote_workers.build()
            remote = await zag.Engine(flow, store=store, executor=executor).run()
            print("remote:", {k: remote[k] for k in sorted(remote)})
            print("workers seen:", len(executor.workers()))
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            await worker.wait()
    print("identical:", local == remote)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "amqp://guest:guest@127.0.0.1/"))
