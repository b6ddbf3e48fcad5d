"""Database URLs: checked at once (a typo never waits for a connection timeout)
and shown without their password."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ConfigurationError

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

__all__ = ["hide_password", "parse_url"]


def hide_password(url: str) -> str:
    """`url` with any password between `user:` and `@` replaced by ***."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not (sep and at and ":" in userinfo):
        return url
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{host}"


def parse_url(url: str) -> URL:
    """`url` parsed by SQLAlchemy (for the SQL job boards), or ConfigurationError at
    once when it cannot name a database (bad syntax or port, another driver,
    SQLite without a file)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    hidden = hide_password(url)
    try:
        parsed = make_url(url)
        parsed.port  # noqa: B018 - parsing checks the port too
    except (ArgumentError, ValueError) as exc:
        raise ConfigurationError(f"malformed database URL {hidden!r}: {exc}") from None
    drivers = {"sqlite": "aiosqlite", "postgresql": "asyncpg"}
    backend, driver = parsed.get_backend_name(), parsed.get_driver_name()
    if drivers.get(backend) != driver:
        raise ConfigurationError(
            f"unsupported database URL {hidden!r}: use sqlite+aiosqlite:///path.db or "
            f"postgresql+asyncpg://user@host/db"
        )
    if backend == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise ConfigurationError(
            f"SQLite URL {hidden!r} names no file: use sqlite+aiosqlite:///path.db "
            f"(an in-memory database would lose the flows it exists to keep)"
        )
    return parsed
