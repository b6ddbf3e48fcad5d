"""Many flows interrupted at once, all resumed concurrently by one process.

A worker process starts five provisioning flows in one logbook, running them
concurrently, and dies while they are in flight. A second process lists the
logbook's unfinished flows and resumes them all at once in a task group; each
picks up where its own record says it stopped.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import zag_async as zag

CRASH_MARK = "CRASH_AFTER"


@zag.task(provides="network")
async def allocate_network(vm: str) -> str:
    return f"net-{vm}"


@zag.task(provides="disk")
async def create_disk(vm: str, network: str) -> str:
    if os.environ.get(CRASH_MARK):
        await asyncio.sleep(3600)  # still running when the process is killed
    return f"disk-{vm}"


@zag.task(provides="booted")
async def boot(vm: str, network: str, disk: str) -> str:
    return f"{vm} up on {network} with {disk}"


def provision() -> zag.Flow:
    """The factory: importable as 'resume_many_flows:provision'."""
    return zag.linear("provision", allocate_network, create_disk, boot)


async def start(url: str) -> None:
    async with zag.connect(url) as backend:
        book = zag.LogBook("nightly-batch")
        await backend.save_logbook(book)
        print(f"LOGBOOK {book.uuid}", flush=True)
        engines = [
            zag.Engine.from_factory(
                "resume_many_flows:provision", backend=backend, logbook=book.uuid, store={"vm": vm}
            )
            for vm in ("vm-1", "vm-2", "vm-3", "vm-4", "vm-5")
        ]
        async with asyncio.TaskGroup() as tg:
            for engine in engines:
                tg.create_task(engine.run())


async def resume_all(url: str, logbook: str) -> None:
    async with zag.connect(url) as backend:
        unfinished = await backend.list_flows(
            logbook=logbook, states=[zag.FlowState.RUNNING, zag.FlowState.SUSPENDED]
        )
        print(f"{len(unfinished)} unfinished flows in the logbook; resuming them together")
        results: dict[str, str] = {}

        async def resume(flow_id: str) -> None:
            engine = await zag.Engine.load(flow_id, backend=backend)
            out = await engine.run()
            results[out["vm"]] = out["booted"]

        async with asyncio.TaskGroup() as tg:
            for summary in unfinished:
                tg.create_task(resume(summary.uuid))
        for vm in sorted(results):
            print(f"  {results[vm]}")
        done = await backend.list_flows(logbook=logbook, states=[zag.FlowState.SUCCESS])
        print(f"{len(done)} flows now SUCCESS")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'flows.db'}"
        child = subprocess.Popen(
            [sys.executable, __file__, "start", url],
            env={**os.environ, CRASH_MARK: "1"},
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        logbook = child.stdout.readline().split()[1]
        asyncio.run(wait_until_in_flight(url, logbook))
        child.kill()  # SIGKILL: nothing gets to clean up
        child.wait()
        print("worker process killed while 5 flows were in flight")
        asyncio.run(resume_all(url, logbook))


async def wait_until_in_flight(url: str, logbook: str) -> None:
    """Poll the database until every flow has reached create_disk."""
    async with zag.connect(url) as backend:
        for _ in range(500):
            flows = await backend.list_flows(logbook=logbook)
            details = [await backend.load_flow(f.uuid) for f in flows]
            if len(details) == 5 and all(
                d.atoms["create_disk"].state == zag.AtomState.RUNNING for d in details
            ):
                return
            await asyncio.sleep(0.02)
    raise RuntimeError("flows never got going")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "start":
        asyncio.run(start(sys.argv[2]))
    else:
        main()
