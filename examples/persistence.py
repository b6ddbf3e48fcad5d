"""Flow state saved to SQLite, then read back.

Every state change of the flow and its atoms is written to the database as
the flow runs (one commit per step). After the run, the stored record says
what happened: states, results, attempts. Swap the URL for
``postgresql+asyncpg://user@host/db`` and nothing else changes.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import zag_async as zag


@zag.task(provides="disk")
async def create_disk(size_gb: int) -> str:
    return f"vol-{size_gb}g"


@zag.task(provides="vm")
async def boot_vm(disk: str) -> dict[str, str]:
    return {"id": "vm-7", "disk": disk}


@zag.task(provides=("ip", "port"))
async def expose(vm: dict[str, str]) -> tuple[str, int]:
    return ("10.0.0.7", 22)


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'flows.db'}"
        async with zag.connect(url) as backend:
            flow = zag.linear("provision", create_disk, boot_vm, expose)
            engine = zag.Engine(flow, backend=backend, store={"size_gb": 20})
            results = await engine.run()
            print(f"ran: ip={results['ip']} port={results['port']}")

            # Another process could do exactly this with the flow id.
            stored = await backend.load_flow(engine.flow_id)
            print(f"stored flow {stored.name!r}: {stored.state}, store={stored.store}")
            for atom in zag.inspection.describe_flow(stored):
                result = stored.atoms[atom.name].result
                line = f"{atom.name:<12} {atom.state:<8} attempts={atom.attempts}"
                print(f"  {line} result={result!r}")
            # The tuple result is still a tuple after the round trip through JSON.
            print(f"expose result type: {type(stored.atoms['expose'].result).__name__}")
            print(f"commits: {stored.version} for {len(stored.atoms)} atoms")


if __name__ == "__main__":
    asyncio.run(main())
