"""A process dies in the middle of a flow; another one finishes it.

The first process starts the flow from a *factory* (an importable function
that builds it), so the flow record knows how to rebuild the flow. Its third
step kills the process outright (like ``kill -9``). A second process loads the
flow by id and runs it: the two completed steps are not run again, the step
that was running when the process died runs again (at-least-once), and the
flow finishes.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import zag_async as zag

CRASH_MARK = "CRASH_NOW"


@zag.task(provides="order")
async def take_order(item: str) -> str:
    print(f"  take_order({item})")
    return f"order-{item}"


@zag.task(provides="payment")
async def charge(order: str) -> str:
    print(f"  charge({order})")
    return f"paid-{order}"


@zag.task(provides="parcel")
async def pack(payment: str) -> str:
    print(f"  pack({payment})")
    if os.environ.get(CRASH_MARK):
        sys.stdout.flush()
        os._exit(137)  # the process dies here, as if killed
    return "parcel-1"


@zag.task(provides="tracking")
async def ship(parcel: str) -> str:
    print(f"  ship({parcel})")
    return "TRK-9"


def build_flow() -> zag.Flow:
    """The factory: importable as 'resume_after_crash:build_flow'."""
    return zag.linear("order", take_order, charge, pack, ship)


async def start(url: str) -> None:
    async with zag.connect(url) as backend:
        engine = zag.Engine.from_factory(
            "resume_after_crash:build_flow", backend=backend, store={"item": "book"}
        )
        print(f"FLOW_ID {engine.flow_id}", flush=True)
        await engine.run()


async def finish(url: str, flow_id: str) -> None:
    async with zag.connect(url) as backend:
        before = await backend.load_flow(flow_id)
        states = ", ".join(f"{a.name}={a.state}" for a in before.atoms.values())
        print(f"stored after the crash: flow {before.state}; {states}")
        print("second process resumes:")
        engine = await zag.Engine.load(flow_id, backend=backend)
        results = await engine.run()
        print(f"flow {engine.state}: tracking={results['tracking']}")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'flows.db'}"
        print("first process runs the flow:")
        child = subprocess.run(
            [sys.executable, __file__, "start", url],
            env={**os.environ, CRASH_MARK: "1"},
            capture_output=True,
            text=True,
        )
        lines = child.stdout.splitlines()
        flow_id = next(line.split()[1] for line in lines if line.startswith("FLOW_ID"))
        print("\n".join(line for line in lines if not line.startswith("FLOW_ID")))
        print(f"first process died (exit code {child.returncode})")
        asyncio.run(finish(url, flow_id))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "start":
        asyncio.run(start(sys.argv[2]))
    else:
        main()
