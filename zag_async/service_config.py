"""What a `ZagService` is asked to be, checked before anything opens.

The service's constructor takes plain keyword arguments (URLs, True/False, a
mapping of conductor options); this module turns them into one frozen,
validated `ServiceConfig`, resolving the defaults that depend on each other
(the board in the backend's own database, a conductor on a SQL board), so a
mistake is reported at construction with the argument that is wrong.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .atom import Atom
from .errors import ConfigurationError

if TYPE_CHECKING:
    from .workers.worker import Worker

__all__ = ["CONDUCTOR_OPTIONS", "ServiceConfig", "is_sql", "worker_class_or_explain"]

#: Conductor keyword arguments `conductor={...}` may set.
CONDUCTOR_OPTIONS = frozenset(
    {"name", "max_jobs", "build_attempts", "listeners", "engine_listeners", "engine_options"}
)


def is_sql(url: str) -> bool:
    """True for a SQLite or PostgreSQL URL (durable, and able to hold a job board)."""
    return url.split("://", 1)[0].lower().split("+", 1)[0] in ("sqlite", "postgresql")


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """A service's checked settings (see `ZagService` for what each means)."""

    backend: str
    board: str | None
    #: Conductor options when it takes any job from the board; None: only its own.
    conductor: Mapping[str, Any] | None
    workers: tuple[tuple[str, tuple[Atom, ...]], ...]
    broker: str | None
    shutdown_timeout: float
    recover_every: float

    @classmethod
    def of(
        cls,
        *,
        backend: str,
        board: str | None,
        conductor: bool | Mapping[str, Any] | None,
        workers: Iterable[tuple[str, Iterable[Atom]]],
        broker: str | None,
        shutdown_timeout: float,
        recover_every: float,
    ) -> ServiceConfig:
        """Check the arguments and resolve the "auto" defaults."""
        if not isinstance(backend, str) or "://" not in backend:
            raise ConfigurationError(
                f"backend must be a storage URL such as 'memory://' or "
                f"'sqlite+aiosqlite:///flows.db', got {backend!r}"
            )
        if board == "auto":
            board = backend if is_sql(backend) else "memory://"
        if board is not None and (not isinstance(board, str) or "://" not in board):
            raise ConfigurationError(
                f"board must be a job board URL such as 'memory://' or "
                f"'zookeeper://127.0.0.1:2181/zag', or None, got {board!r}"
            )
        options = _conductor_options(conductor, board)
        worker_specs: list[tuple[str, tuple[Atom, ...]]] = []
        for spec in workers:
            if not (isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], str)):
                raise ConfigurationError(
                    f"workers must be (topic, tasks) pairs, got {spec!r} in workers="
                )
            worker_specs.append((spec[0], tuple(spec[1])))
        if worker_specs and not broker:
            raise ConfigurationError("in-app workers need broker='amqp://...'")
        if not isinstance(recover_every, (int, float)) or not recover_every > 0:
            raise ConfigurationError(f"recover_every must be > 0 seconds, got {recover_every!r}")
        if not isinstance(shutdown_timeout, (int, float)) or shutdown_timeout < 0:
            raise ConfigurationError(
                f"shutdown_timeout must be >= 0 seconds, got {shutdown_timeout!r}"
            )
        return cls(
            backend,
            board,
            options,
            tuple(worker_specs),
            broker,
            float(shutdown_timeout),
            float(recover_every),
        )


def _conductor_options(
    conductor: bool | Mapping[str, Any] | None, board: str | None
) -> dict[str, Any] | None:
    if conductor is None:  # auto: a SQL board is the embedded default, so run its jobs
        conductor = board is not None and is_sql(board)
    options: dict[str, Any] | None
    if isinstance(conductor, bool):
        options = {} if conductor else None
    elif isinstance(conductor, Mapping):
        options = dict(conductor)
        unknown = sorted(set(options) - CONDUCTOR_OPTIONS)
        if unknown:
            raise ConfigurationError(
                f"conductor options {unknown} are not Conductor arguments "
                f"(allowed: {sorted(CONDUCTOR_OPTIONS)})"
            )
    else:
        raise ConfigurationError(
            f"conductor must be True, False or a mapping of Conductor options, got {conductor!r}"
        )
    if options is not None and board is None:
        raise ConfigurationError("an in-app conductor needs a job board: pass board=URL")
    return options


def worker_class_or_explain() -> type[Worker]:
    """`zag.Worker`, or a ConfigurationError naming the extra that brings it."""
    try:
        from .workers.worker import Worker
    except ImportError as exc:  # pragma: no cover - depends on installed extras
        raise ConfigurationError(
            f"in-app workers need: pip install 'zag-async[amqp]' ({exc})"
        ) from exc
    return Worker
