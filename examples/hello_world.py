"""The smallest zag-async program: one task, run once, result printed.

A task is a coroutine marked with ``@zag.task``. Its parameters say what it
needs (here ``name``, taken from the store given to ``zag.run``) and
``provides`` names what it gives back. ``zag.run`` returns every value the flow
knows by name: the store plus everything the atoms provided.

Run it with ``python examples/hello_world.py``.
"""

from __future__ import annotations

import asyncio

import zag_async as zag


@zag.task(provides="greeting")
async def greet(name: str) -> str:
    return f"Hello, {name}!"


async def main() -> None:
    flow = zag.linear("hello", greet)
    results = await zag.run(flow, store={"name": "world"})
    print(results["greeting"])
    # The mapping holds the store's values as well as what the task provided.
    print(dict(sorted(results.items())))


if __name__ == "__main__":
    asyncio.run(main())
