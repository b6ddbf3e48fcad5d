"""A child that starts or resumes a one-atom flow whose atom sleeps until killed."""

from __future__ import annotations

import asyncio
import sys

import zag_async as zag


@zag.task
async def slow() -> None:
    print("started", flush=True)
    await asyncio.sleep(60)


def flow() -> zag.Flow:
    return zag.linear("attempts", slow)


async def main(url: str, flow_id: str | None) -> None:
    async with zag.connect(url, lease=1.0) as db:
        if flow_id is None:
            engine = zag.Engine.from_factory(f"{__name__}:flow", backend=db)
            print("id", engine.flow_id, flush=True)
        else:
            engine = await zag.Engine.load(flow_id, backend=db, takeover=True)
        await engine.run()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None))
