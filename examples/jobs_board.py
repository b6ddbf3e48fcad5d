"""A producer posts jobs; a conductor claims and runs them.

With no arguments everything runs in this process (the embedded defaults:
an in-memory job board and in-memory flow state). Give URLs to run the very
same code against servers, for example::

    python examples/jobs_board.py zookeeper://127.0.0.1:2181/zag-demo \\
        postgresql+asyncpg://postgres@127.0.0.1:5432/test

Jobs are posted with priorities; the conductor claims the most urgent first.
One job's flow fails and is reverted (the job is still consumed: its flow
ended cleanly), one is posted twice with the same idempotency key (only one
job exists), and the poster waits for each outcome.
"""

from __future__ import annotations

import asyncio
import sys
import uuid

import zag_async as zag


@zag.task(provides="snapshot")
async def snapshot(vm: str) -> str:
    return f"snap-{vm}"


@snapshot.revert
async def drop_snapshot(vm: str, **kwargs: object) -> None:
    print(f"    (reverted snapshot of {vm})")


@zag.task(provides="size")
async def resize(vm: str, snapshot: str, size: int) -> int:
    if size > 64:
        raise ValueError(f"{vm}: {size} GB is more than the host allows")
    return size


def resize_flow() -> zag.Flow:
    """The factory the jobs name ('jobs_board:resize_flow')."""
    return zag.linear("resize", snapshot, resize)


async def main(board_url: str, store_url: str) -> None:
    async with zag.connect(store_url) as db, zag.jobs.connect(board_url, backend=db) as board:
        requests = [("web-1", 16, 0), ("db-1", 32, 5), ("cache-1", 128, 1), ("web-2", 8, 0)]
        jobs = []
        for vm, size, priority in requests:
            job = await board.post(
                f"resize {vm}",
                "jobs_board:resize_flow",
                store={"vm": vm, "size": size},
                priority=priority,
                idempotency_key=f"resize-{vm}-{size}-{RUN}",
            )
            jobs.append(job)
        again = await board.post(
            "resize web-1",
            "jobs_board:resize_flow",
            store={"vm": "web-1", "size": 16},
            idempotency_key=f"resize-web-1-16-{RUN}",
        )
        same = again.uuid == jobs[0].uuid
        print(f"posted {len(jobs)} jobs; posting web-1 again gave the same job: {same}")
        print("claim order:", ", ".join(j.name for j in await board.jobs()))

        claimed: list[str] = []
        conductor = zag.Conductor(
            board,
            backend=db,
            name="conductor-1",
            max_jobs=1,
            listeners=[lambda e: claimed.append(e.job.name) if e.kind == "claimed" else None],
        )
        async with conductor:
            worker = asyncio.create_task(conductor.run())
            for job in jobs:
                outcome = await job.wait()
                detail = f"size={outcome.results['size']}" if outcome.ok else outcome.error
                print(f"  {job.name:<16} {outcome.state:<8} {detail}")
            conductor.stop()
            await worker
        print("conductor claimed, in order:", ", ".join(claimed))
        print("jobs left on the board:", len(await board.jobs()))


#: Keeps idempotency keys unique per run when a server board outlives the example.
RUN = uuid.uuid4().hex[:8]

if __name__ == "__main__":
    board_url = sys.argv[1] if len(sys.argv) > 1 else "memory://"
    store_url = sys.argv[2] if len(sys.argv) > 2 else "memory://"
    asyncio.run(main(board_url, store_url))
