"""The SQLite backend's own machinery: group commit, the busy fallback to its
thread, closing with work queued, and what opening a current file imports."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import zag_async as zag
from zag_async.errors import ConcurrentUpdate, ConfigurationError
from zag_async.persistence import names, schema
from zag_async.persistence.sqlite import SqliteBackend, sqlite_path

from . import flows


def _url(tmp_path: Path, name: str = "flows.db") -> str:
    return f"sqlite+aiosqlite:///{tmp_path / name}"


def test_hand_written_columns_match_the_schema() -> None:
    assert names.SCHEMA_VERSION == schema.SCHEMA_VERSION
    flow_columns = {c.name for c in schema.flows.columns}
    assert flow_columns == {"uuid", "lease_owner", "lease_expires", *names.FLOW_COLUMNS}
    atom_columns = {c.name for c in schema.atoms.columns}
    assert atom_columns == {"flow_uuid", "name", *names.ATOM_COLUMNS}
    assert set(names.SUMMARY_COLUMNS) <= flow_columns


async def test_concurrent_flows_share_commits(tmp_path: Path) -> None:
    async with zag.connect(_url(tmp_path)) as backend:
        assert isinstance(backend, SqliteBackend)
        flow = flows.linear_steps(3)
        before = backend.commits
        engines = [zag.Engine(flow, backend=backend) for _ in range(200)]
        async with asyncio.TaskGroup() as tg:
            for engine in engines:
                tg.create_task(engine.run())
        commits = backend.commits - before
        assert all(e.state is zag.FlowState.SUCCESS for e in engines)
        stored = await backend.list_flows()
        writes = sum(f.version for f in stored)
        assert len(stored) == 200
        # Every flow wrote several times; ready at once, they shared transactions.
        assert commits * 10 <= writes, (commits, writes)


async def test_a_lone_write_commits_at_once(tmp_path: Path) -> None:
    async with zag.connect(_url(tmp_path)) as backend:
        assert isinstance(backend, SqliteBackend)
        before = backend.commits
        await zag.Engine(flows.linear_steps(3), backend=backend).run()
        assert backend.commits - before >= 2  # one transaction per write: nothing waited


async def test_a_stale_write_fails_alone_in_its_batch(tmp_path: Path) -> None:
    async with zag.connect(_url(tmp_path)) as backend:
        details = []
        for i in range(3):
            detail = zag.FlowDetail(name=f"f{i}")
            await backend.save(detail, [])
            details.append(detail)
        details[1].version -= 1  # stale: someone else wrote since
        results = await asyncio.gather(
            *(backend.save(d, []) for d in details), return_exceptions=True
        )
        assert results[0] is None and results[2] is None
        assert isinstance(results[1], ConcurrentUpdate)
        assert [(await backend.load_flow_row(d.uuid))["version"] for d in details] == [2, 1, 2]


async def test_a_busy_file_moves_writes_to_the_thread_without_blocking_the_loop(
    tmp_path: Path,
) -> None:
    url = _url(tmp_path)
    async with zag.connect(url) as backend:
        detail = zag.FlowDetail(name="busy")
        await backend.save(detail, [])
        other = sqlite3.connect(sqlite_path(url), isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another writer holds the file
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        write = asyncio.create_task(backend.save(detail, []))
        await asyncio.sleep(0.3)
        assert not write.done()  # waiting in the thread for the lock
        assert ticks >= 10  # ... while the loop goes on
        other.execute("COMMIT")
        other.close()
        await asyncio.wait_for(write, 5)
        ticker.cancel()
        assert (await backend.load_flow_row(detail.uuid))["version"] == 2
        # With the file free again, writes run on the loop's connection once more.
        await backend.save(detail, [])
        assert detail.version == 3


async def test_close_finishes_queued_writes(tmp_path: Path) -> None:
    url = _url(tmp_path)
    backend = zag.connect(url)
    await backend.open()
    details = [zag.FlowDetail(name=f"f{i}") for i in range(20)]
    writes = [asyncio.ensure_future(backend.save(d, [])) for d in details]
    await asyncio.sleep(0)
    await backend.aclose()
    await asyncio.gather(*writes)
    async with zag.connect(url) as again:
        assert len(await again.list_flows()) == 20


async def test_a_cancelled_caller_does_not_wedge_the_backend(tmp_path: Path) -> None:
    async with zag.connect(_url(tmp_path)) as backend:
        detail = zag.FlowDetail(name="c")
        save = asyncio.ensure_future(backend.save(detail, []))
        await asyncio.sleep(0)
        save.cancel()
        with pytest.raises(asyncio.CancelledError):
            await save
        other = zag.FlowDetail(name="d")
        await asyncio.wait_for(backend.save(other, []), 5)
        assert (await backend.load_flow_row(other.uuid))["version"] == 1


def test_opening_a_current_file_imports_no_sqlalchemy(tmp_path: Path) -> None:
    url = _url(tmp_path)
    code = (
        "import asyncio, sys, zag_async as zag\n"
        "async def main():\n"
        "    async with zag.connect(sys.argv[1]) as b:\n"
        "        await b.list_flows()\n"
        "asyncio.run(main())\n"
        "print('sqlalchemy' in sys.modules, 'aiosqlite' in sys.modules)\n"
    )
    first = subprocess.run([sys.executable, "-c", code, url], capture_output=True, text=True)
    assert first.returncode == 0, first.stderr  # creates the schema
    again = subprocess.run([sys.executable, "-c", code, url], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert again.stdout.split() == ["False", "False"]


async def test_an_old_file_is_upgraded(tmp_path: Path) -> None:
    url = _url(tmp_path)
    async with zag.connect(url):
        pass
    conn = sqlite3.connect(sqlite_path(url), isolation_level=None)
    conn.execute("DROP INDEX zag_signals_pending")
    conn.execute("DROP INDEX zag_flows_created")
    conn.execute("UPDATE zag_schema_version SET version = 4")
    conn.close()
    with pytest.raises(zag.errors.StorageError, match="version 4"):
        async with zag.connect(url, upgrade=False):
            pass
    async with zag.connect(url) as backend:
        assert await backend.upgrade() == names.SCHEMA_VERSION
    conn = sqlite3.connect(sqlite_path(url))
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    conn.close()
    assert {"zag_signals_pending", "zag_flows_created"} <= indexes


@given(st.text(max_size=60))
def test_any_url_text_is_a_path_or_a_configuration_error(text: str) -> None:
    for url in (text, f"sqlite+aiosqlite://{text}", f"sqlite+aiosqlite:///{text}"):
        started = time.monotonic()
        try:
            path = sqlite_path(url)
        except ConfigurationError:
            continue
        assert isinstance(path, str) and path
        assert time.monotonic() - started < 0.1


async def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not an SQLite file at all" * 100)
    url = f"sqlite+aiosqlite:///{path}"
    started = time.monotonic()
    with pytest.raises(zag.errors.StorageError) as caught:
        async with zag.connect(url):
            pass
    assert url in str(caught.value) and "not a database" in str(caught.value)
    assert time.monotonic() - started < 5


def _schema_of(path: Path) -> tuple[list[tuple[str, str, str]], list[tuple[object, ...]]]:
    conn = sqlite3.connect(path)
    try:
        entries = [
            (kind, name, " ".join(sql.replace("(", " ( ").replace(")", " ) ").split()))
            for kind, name, sql in conn.execute(
                "SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL"
            )
        ]
        rows = [
            *conn.execute("SELECT name, value FROM zag_job_counters ORDER BY name"),
            *conn.execute("SELECT version FROM zag_schema_version"),
        ]
    finally:
        conn.close()
    return sorted(entries), rows


async def test_a_new_file_gets_the_schema_the_migrations_make(tmp_path: Path) -> None:
    """The plain-SQL schema of a new file equals what SQLAlchemy's migrations build."""
    from sqlalchemy import create_engine

    fresh = tmp_path / "fresh.db"
    async with zag.connect(f"sqlite+aiosqlite:///{fresh}"):
        pass
    migrated = tmp_path / "migrated.db"
    engine = create_engine(f"sqlite:///{migrated}")
    with engine.begin() as conn:
        assert schema.migrate(conn) == names.SCHEMA_VERSION
    engine.dispose()
    assert _schema_of(fresh) == _schema_of(migrated)


def test_a_new_file_is_created_without_sqlalchemy(tmp_path: Path) -> None:
    url = _url(tmp_path, "new.db")
    code = (
        "import asyncio, sys, zag_async as zag\n"
        "async def main():\n"
        "    async with zag.connect(sys.argv[1]) as b:\n"
        "        assert await b.upgrade() > 0\n"
        "asyncio.run(main())\n"
        "print('sqlalchemy' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, url], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False"]
