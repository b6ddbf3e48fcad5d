"""Serves an example order service for the kill -9 tests, every task call leaving a row.

    python order_server.py fastapi|aiohttp DATABASE_URL PORT [NAME]

Runs `examples/fastapi_app.py` (uvicorn) or `examples/aiohttp_app.py`
(`web.run_app`) through the example's own `serve()`, on one database that holds
the flows and the job board, as a real server the tests can SIGKILL. Two
changes, made from outside the example:

- an executor that appends `<atom>:exec` to the side-effect table of
  `crash.flows` (same database, own connection, committed at once) right before
  each task call and `<atom>:done` right after it, keyed by the order's item, so
  a test can count how many times each atom of each order really ran;
- every item is in stock, so each test order can have an item of its own
  (`o<hex>`), the key of its rows.
"""

from __future__ import annotations

import asyncio
import importlib
import re
import sys
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parents[1]
EXAMPLES = TESTS.parent / "examples"
sys.path[:0] = [str(TESTS), str(EXAMPLES)]  # crash.flows; the example as a top-level module

import zag_async as zag  # noqa: E402
from crash import flows  # noqa: E402
from zag_async.execution import LocalExecutor  # noqa: E402

#: An order's key in the side-effect log: its item, found in any task's arguments
#: (`item`, or the reservation, payment or tracking strings made from it).
ORDER = re.compile(r"o[0-9a-f]{12}")


class Plenty(dict[str, int]):
    """Stock and prices for any item."""

    def __missing__(self, item: str) -> int:
        return 100

    def get(self, item: str, default: Any = None) -> int:
        return self[item]


async def record(url: str, order: str, entry: str) -> None:
    """`flows.record`, with SQLite's blocking write in a thread: on the loop it would
    wait for the very lock the server's own connection holds, and never get it."""
    path = flows.sqlite_path(url)
    if path is None:
        await flows.record(url, order, entry)
        return
    await asyncio.to_thread(flows.record_sqlite, path, order, entry, 30)


class Recording(LocalExecutor):
    """The local executor, with a committed row before and after each task call."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def execute(
        self,
        atom: zag.Atom,
        name: str,
        flow: str,
        kwargs: dict[str, Any],
        *,
        time_limit: float | None,
        delay: float,
    ) -> Any:
        found = ORDER.search(repr(kwargs))
        order = found.group() if found else "?"
        await record(self.url, order, f"{name}:exec")
        value = await super().execute(atom, name, flow, kwargs, time_limit=time_limit, delay=delay)
        await record(self.url, order, f"{name}:done")
        return value


def main(kind: str, url: str, port: str, name: str | None = None) -> None:
    module: Any = importlib.import_module(f"{kind}_app")  # the name its factories use
    module.STOCK = Plenty()
    module.PRICES = Plenty()
    options: dict[str, Any] = {"executor": Recording(url)}
    if name is not None:
        options["name"] = name
    module.serve(url, int(port), **options)


if __name__ == "__main__":
    main(*sys.argv[1:])
