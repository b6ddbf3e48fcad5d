"""Job boards by URL: `memory://` (in this process), `zookeeper://host:port[,host:port]/path`,
`sqlite+aiosqlite:///app.db` and `postgresql+asyncpg://user@host/db` (in the flows' database).

async with zag.jobs.connect("zookeeper://127.0.0.1:2181/zag", backend=backend) as board:
    job = await board.post("provision", "myapp.flows:provision", "web-1", store={...})
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError
from .base import (
    Claim,
    FinishedJob,
    Holder,
    Job,
    JobBoard,
    JobOutcome,
    JobState,
    Schedule,
    pick_backend,
)
from .memory import MemoryBoard

if TYPE_CHECKING:
    from ..persistence.base import Backend

__all__ = [
    "Claim",
    "FinishedJob",
    "Holder",
    "Job",
    "JobBoard",
    "JobOutcome",
    "JobState",
    "MemoryBoard",
    "Schedule",
    "connect",
]


def connect(
    url: str,
    *,
    backend: Backend | None = None,
    persistence: Backend | None = None,
    **options: Any,
) -> JobBoard:
    """A job board for `url`; use it as `async with connect(url, backend=...) as board:`.

    `backend` is where the flow records of posted jobs are created (the same
    backend the conductors use; `persistence=` is its deprecated old name).
    Options go to the board (ZooKeeper: `session_timeout=`, `call_timeout=`;
    SQL: `lease=`, `poll_interval=`, `connect_timeout=`).
    """
    if not isinstance(url, str) or "://" not in url:
        raise ConfigurationError(
            f"job board URL must look like 'memory://' or 'zookeeper://host:2181/path', got {url!r}"
        )
    backend = pick_backend("jobs.connect", backend, persistence)
    scheme = url.split("://", 1)[0].lower()
    if scheme == "memory":
        if options:
            raise ConfigurationError(f"memory:// job boards take no options, got {sorted(options)}")
        return MemoryBoard(url, backend=backend)
    if scheme == "zookeeper":
        try:
            from .zookeeper import ZooKeeperBoard
        except ImportError as exc:  # pragma: no cover - depends on installed extras
            raise ConfigurationError(
                f"zookeeper:// needs extra packages: pip install 'zag-async[zookeeper]' ({exc})"
            ) from exc
        return ZooKeeperBoard(url, backend=backend, **options)
    if scheme in _SQL_EXTRAS:
        try:
            from .sql import SqlBoard
        except ImportError as exc:  # pragma: no cover - depends on installed extras
            raise ConfigurationError(
                f"{scheme}:// needs extra packages: pip install 'zag-async[{_SQL_EXTRAS[scheme]}]' "
                f"({exc})"
            ) from exc
        return SqlBoard(url, backend=backend, **options)
    raise ConfigurationError(
        f"no job board for {scheme!r} URLs; use memory://, zookeeper://, sqlite+aiosqlite:// "
        f"or postgresql+asyncpg://"
    )


#: SQL board URL schemes and the extra each needs
_SQL_EXTRAS = {"sqlite+aiosqlite": "sqlite", "postgresql+asyncpg": "postgres"}
