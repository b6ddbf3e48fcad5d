"""Computing parts of a result concurrently with an unordered flow.

The sum of squares of 1..1000 is split into four chunks. One task computes
the sum for a chunk; ``bind`` makes four atoms of it, each reading its own
chunk (``rebind``) and providing its own partial sum. They sit in an
unordered flow, so they may all run at once; a final step, after the
unordered flow in a linear one, adds the partial sums up.

Each chunk task also counts how many chunk tasks are running at that moment.
Unbounded, all four overlap; with ``max_concurrency=2`` the engine never runs
more than two atoms at once.
"""

from __future__ import annotations

import asyncio

import zag_async as zag

CHUNKS = 4
NUMBERS = list(range(1, 1001))


class Gauge:
    """Tracks how many chunk tasks are running at once, and the peak."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0


gauge = Gauge()


@zag.task
async def sum_of_squares(numbers: list[int]) -> int:
    gauge.now += 1
    gauge.peak = max(gauge.peak, gauge.now)
    try:
        # Stands in for real work (an I/O call, say): other chunks run meanwhile.
        await asyncio.sleep(0.05)
        return sum(n * n for n in numbers)
    finally:
        gauge.now -= 1


class Combine(zag.Task):
    """Adds up the partial sums; its inputs are named with ``rebind``."""

    provides = "total"

    async def execute(self, **partials: int) -> int:
        return sum(partials.values())


def build_flow() -> zag.Flow:
    chunks = [
        sum_of_squares.bind(
            name=f"chunk{i}", rebind={"numbers": f"numbers{i}"}, provides=f"partial{i}"
        )
        for i in range(CHUNKS)
    ]
    combine = Combine(rebind={f"p{i}": f"partial{i}" for i in range(CHUNKS)})
    return zag.linear("sum-of-squares", zag.unordered("chunks", *chunks), combine)


def chunk_store() -> dict[str, list[int]]:
    size = len(NUMBERS) // CHUNKS
    return {f"numbers{i}": NUMBERS[i * size : (i + 1) * size] for i in range(CHUNKS)}


async def main() -> None:
    expected = sum(n * n for n in NUMBERS)
    for limit in (None, 2):
        gauge.peak = 0
        results = await zag.run(build_flow(), store=chunk_store(), max_concurrency=limit)
        partials = [results[f"partial{i}"] for i in range(CHUNKS)]
        print(f"max_concurrency={limit}:")
        print(f"  partial sums: {partials}")
        print(f"  total: {results['total']} (expected {expected})")
        print(f"  most chunks running at once: {gauge.peak}")


if __name__ == "__main__":
    asyncio.run(main())
