"""A run cancelled while a commit is in flight still records its suspension.

The write that was in flight when the cancel came may already have landed in
the database; if the engine then wrote the suspension expecting the old version
it would be refused (ConcurrentUpdate) and the flow would stay RUNNING. The
commit is shielded instead: the cancelled write finishes, the next one waits
for it and expects the version it produced.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import zag_async as zag
from zag_async.persistence.memory import MemoryBackend

from . import flows


class SlowAckBackend(MemoryBackend):
    """Lands each write at once, then takes `ack_delay` to acknowledge it."""

    ack_delay = 0.0
    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.landed = asyncio.Event()

    async def _write(self, flow_row: Any, atom_rows: Any, expected: int) -> None:
        await super()._write(flow_row, atom_rows, expected)
        self.landed.set()
        await asyncio.sleep(self.ack_delay)


async def test_cancel_during_a_landed_write_records_suspension() -> None:
    async with SlowAckBackend("memory://") as backend:
        engine = zag.Engine.from_factory(flows.linear_steps, args=(4,), backend=backend)
        backend.ack_delay = 0.2
        run = asyncio.create_task(engine.run())
        # Cancel while the first commit's write has landed but is not yet acknowledged.
        await backend.landed.wait()
        run.cancel()
        backend.ack_delay = 0.0
        with contextlib.suppress(asyncio.CancelledError):
            await run
        stored = await backend.load_flow(engine.flow_id)
        assert stored.state is zag.FlowState.SUSPENDED
        assert stored.version == engine.storage.flow.version

        resumed = await zag.Engine.load(engine.flow_id, backend=backend)
        results = await resumed.run()
        assert results == {f"s{i}": f"s{i}-out" for i in range(4)}
