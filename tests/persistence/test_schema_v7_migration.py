"""Migration 7 (the record of operator actions, the (created_at, uuid) index) from
a version-6 SQLite file and a version-6 PostgreSQL database, and the name
filter's property: any text is a filter, never an error, the same on memory://
and SQLite."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import fresh_pg_database

import zag_async as zag
from zag_async.errors import ConfigurationError, StorageError
from zag_async.persistence import names
from zag_async.persistence.base import MAX_NAME_FILTER, fold

#: What migration 7 changed, undone: a version-6 schema (with its rows kept).
DOWNGRADE_TO_6 = (
    "DROP TABLE zag_actions",
    "DROP INDEX zag_flows_created",
    "CREATE INDEX zag_flows_created ON zag_flows (created_at)",
    "UPDATE zag_schema_version SET version = 6",
)


def _sqlite_schema(path: Path) -> list[tuple[str, str, str]]:
    conn = sqlite3.connect(path)
    try:
        return sorted(
            (kind, name, " ".join(sql.replace("(", " ( ").replace(")", " ) ").split()))
            for kind, name, sql in conn.execute(
                "SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL"
            )
        )
    finally:
        conn.close()


async def _filled(url: str) -> zag.FlowDetail:
    async with zag.connect(url) as backend:
        detail = zag.FlowDetail("kept across the upgrade", created_at=42.0)
        await backend.save(detail, [zag.AtomDetail("a", result=1)])
        return detail


async def _check_upgraded(url: str, detail: zag.FlowDetail) -> None:
    with pytest.raises(StorageError, match="version 6"):
        async with zag.connect(url, upgrade=False):
            pass
    async with zag.connect(url) as backend:
        assert await backend.upgrade() == names.SCHEMA_VERSION == 7
        assert (await backend.load_flow(detail.uuid)).atoms["a"].result == 1
        page = await backend.list_flows(newest_first=True, limit=5, before=(43.0, ""))
        assert [s.uuid for s in page] == [detail.uuid]
        action = await backend.record_action("ops", "resume", detail.uuid)
        assert await backend.list_actions(target=detail.uuid) == [action]


async def test_a_version_6_sqlite_file_is_upgraded(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    detail = await _filled(url)
    conn = sqlite3.connect(tmp_path / "old.db", isolation_level=None)
    for statement in DOWNGRADE_TO_6:
        conn.execute(statement)
    conn.close()

    await _check_upgraded(url, detail)

    async with zag.connect(f"sqlite+aiosqlite:///{tmp_path / 'new.db'}"):
        pass
    assert _sqlite_schema(tmp_path / "old.db") == _sqlite_schema(tmp_path / "new.db")


@pytest.fixture
def scratch_pg() -> Iterator[str]:
    with fresh_pg_database("zag_v7") as url:
        yield url


async def test_a_version_6_postgres_database_is_upgraded(scratch_pg: str) -> None:
    import asyncpg

    detail = await _filled(scratch_pg)
    dsn = scratch_pg.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        for statement in DOWNGRADE_TO_6:
            await conn.execute(statement)
    finally:
        await conn.close()

    await _check_upgraded(scratch_pg, detail)

    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        index = await conn.fetchval(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'zag_flows_created'"
        )
        tables = await conn.fetchval(
            "SELECT count(*) FROM pg_tables WHERE tablename = 'zag_actions'"
        )
    finally:
        await conn.close()
    assert index.endswith("(created_at, uuid, state, name)") and tables == 1


# -- the name filter, any text -----------------------------------------------------------------

NAMES = [
    "100% done",
    "a_b",
    "A_B",
    "back\\slash",
    "ÄÖ ünïcode",
    "İstanbul",
    "straße",
    "emoji 🎉 flow",
    'it\'s "quoted"',
    "tab\tname",
    "%_\\",
    "",
    "x" * 300,
]


@pytest.fixture(scope="module")
def named_stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A memory:// store and a SQLite file holding one flow of each of NAMES."""
    sqlite_url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('names') / 'names.db'}"
    memory_url = f"memory://names-{id(sqlite_url)}"

    async def fill() -> None:
        for url in (memory_url, sqlite_url):
            async with zag.connect(url) as backend:
                for i, name in enumerate(NAMES):
                    detail = zag.FlowDetail(name, uuid=f"flow-{i:02d}", created_at=float(i))
                    await backend.save(detail, [])

    asyncio.run(fill())
    yield memory_url, sqlite_url


async def _matches(url: str, text: str) -> list[str] | str:
    async with zag.connect(url) as backend:
        try:
            return [s.uuid for s in await backend.list_flows(name_contains=text)]
        except ConfigurationError as exc:
            return f"refused: {exc}"


@settings(max_examples=150, deadline=None, database=None)
@given(text=st.text() | st.sampled_from(NAMES).flatmap(lambda n: st.just(n[1:4].upper())))
def test_any_name_filter_text_works_the_same_on_memory_and_sqlite(
    named_stores: tuple[str, str], text: str
) -> None:
    memory_url, sqlite_url = named_stores
    on_memory = asyncio.run(_matches(memory_url, text))
    on_sqlite = asyncio.run(_matches(sqlite_url, text))

    if len(text) > MAX_NAME_FILTER:
        assert isinstance(on_memory, str) and isinstance(on_sqlite, str)
        return
    expected = [
        f"flow-{i:02d}"
        for i, name in enumerate(NAMES)
        if "\x00" not in text and fold(text) in fold(name)
    ]
    assert on_memory == expected
    assert on_sqlite == expected
