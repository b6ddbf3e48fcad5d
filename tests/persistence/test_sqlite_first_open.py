"""Several processes opening one new SQLite file at once all get the schema.

The sqlite3 driver runs DDL outside a transaction, so without BEGIN IMMEDIATE
around the migration two processes both created `zag_schema_version` and one
failed with "table ... already exists".
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from zag_async.persistence.schema import SCHEMA_VERSION

OPEN_AT = """
import asyncio, sys, time
import zag_async as zag

async def main() -> None:
    while time.time() < float(sys.argv[2]):  # start together
        await asyncio.sleep(0.001)
    async with zag.connect(sys.argv[1]) as backend:
        print(await backend.upgrade())

asyncio.run(main())
"""


@pytest.mark.services  # eight processes, and a deliberate wait to start them together
def test_processes_opening_a_new_file_at_once(tmp_path: Path) -> None:
    import time

    for round_ in range(2):
        url = f"sqlite+aiosqlite:///{tmp_path / f'flows{round_}.db'}"
        start = f"{time.time() + 1.5:.3f}"
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", OPEN_AT, url, start],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        outputs = [p.communicate(timeout=30) for p in procs]
        for proc, (out, err) in zip(procs, outputs, strict=True):
            assert proc.returncode == 0, err
            assert out.strip() == str(SCHEMA_VERSION)
