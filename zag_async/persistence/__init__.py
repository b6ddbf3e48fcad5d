"""Durable flow state: backends chosen by URL.

    async with zag.persistence.connect("sqlite+aiosqlite:///flows.db") as backend:
        engine = zag.Engine(flow, backend=backend)

| URL | backend | needs |
| --- | --- | --- |
| `memory://` or `memory://NAME` | in this process | nothing |
| `sqlite+aiosqlite:///path.db` | SQLite file (WAL) | nothing (in the core install) |
| `postgresql+asyncpg://user@host/db` | PostgreSQL | `pip install 'zag-async[postgres]'` |
"""

from __future__ import annotations

from typing import Any

from ..codec import Codec
from ..errors import ConfigurationError
from .base import Backend
from .memory import MemoryBackend

__all__ = ["Backend", "MemoryBackend", "connect", "upgrade"]


def connect(url: str, *, codec: Codec | None = None, **options: Any) -> Backend:
    """A backend for `url`; use it as `async with connect(url) as backend:`.

    Options are passed to the backend (`lease=`: the seconds a flow's lease
    lasts unless renewed, 30 by default; for SQL also `upgrade=`,
    `connect_timeout=`, `pool_size=`).
    """
    if not isinstance(url, str) or "://" not in url:
        raise ConfigurationError(
            f"storage URL must look like 'memory://', 'sqlite+aiosqlite:///path.db' or "
            f"'postgresql+asyncpg://user@host/db', got {url!r}"
        )
    scheme = url.split("://", 1)[0].lower()
    if scheme == "memory":
        if options.keys() - {"lease"}:
            raise ConfigurationError(f"memory:// takes only lease=, got {sorted(options)}")
        return MemoryBackend(url, codec=codec, **options)
    base = scheme.split("+", 1)[0]
    if scheme == "postgresql+asyncpg":
        try:
            from .postgres import PostgresBackend  # asyncpg; SQLAlchemy only to migrate
        except ImportError as exc:  # pragma: no cover - depends on installed extras
            raise ConfigurationError(
                f"postgresql+asyncpg:// needs extra packages: pip install 'zag-async[postgres]' "
                f"({exc})"
            ) from exc
        return PostgresBackend(url, codec=codec, **options)
    if base == "sqlite":
        from .sqlite import SqliteBackend  # the standard sqlite3 module

        return SqliteBackend(url, codec=codec, **options)
    if base == "postgresql":
        raise ConfigurationError(f"use 'postgresql+asyncpg://' for PostgreSQL, not {scheme!r}")
    raise ConfigurationError(
        f"no storage backend for {scheme!r} URLs; use memory://, sqlite+aiosqlite:// or "
        f"postgresql+asyncpg://"
    )


async def upgrade(url: str) -> int:
    """Create or upgrade the schema at `url`; returns the schema version."""
    async with connect(url) as backend:
        return await backend.upgrade()
