"""Events the engine emits, listeners that consume them, and `progress()`.

Listeners are opt-in: the engine prints nothing unless one is attached. A
listener is any callable taking an `Event`; it may be a coroutine function.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TextIO

from .errors import ExecutionError
from .failure import Failure

__all__ = [
    "Event",
    "Listener",
    "LoggingListener",
    "PrintingListener",
    "TimingListener",
    "progress",
    "reporting",
]


@dataclass(frozen=True, slots=True)
class Event:
    """A state change of the flow or of one atom, or a progress report."""

    kind: Literal["flow", "atom", "progress"]
    flow: str
    state: str
    atom: str | None = None
    result: Any = None
    failure: Failure | None = None
    progress: float | None = None
    details: dict[str, Any] | None = None
    duration: float | None = None
    timestamp: float = field(default_factory=time.time)


Listener = Callable[[Event], None | Awaitable[None]]

#: (emit function, flow name, atom name) of the atom running in the current context;
#: set by whoever calls an atom's code, read by `progress()`.
current_atom: contextvars.ContextVar[tuple[Callable[[Event], None], str, str] | None] = (
    contextvars.ContextVar("zag_current_atom", default=None)
)


class reporting:  # noqa: N801 - used as a function: `with reporting(emit, flow, atom):`
    """Within this block, `progress()` reports for `atom` of `flow` through `emit`.

    Whoever calls an atom's code (the engine, a worker) wraps the call in it.
    A small class rather than a generator: it wraps every atom call.
    """

    __slots__ = ("_token", "_value")

    def __init__(self, emit: Callable[[Event], None], flow: str, atom: str) -> None:
        self._value = (emit, flow, atom)

    def __enter__(self) -> None:
        self._token = current_atom.set(self._value)

    def __exit__(self, *exc: object) -> None:
        current_atom.reset(self._token)


def progress(fraction: float, **details: Any) -> None:
    """Report progress (0.0 to 1.0) of the task that is running now.

    Call it from inside a task; listeners receive a `progress` event.
    """
    current = current_atom.get()
    if current is None:
        raise ExecutionError("zag.progress() can only be called from inside a running task")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"progress must be between 0.0 and 1.0, got {fraction!r}")
    emit, flow, atom = current
    emit(
        Event("progress", flow, "RUNNING", atom, progress=float(fraction), details=details or None)
    )


class LoggingListener:
    """Logs every event to a `logging` logger (DEBUG for progress)."""

    def __init__(self, logger: logging.Logger | None = None, level: int = logging.INFO) -> None:
        self.logger = logger or logging.getLogger("zag_async")
        self.level = level

    def __call__(self, event: Event) -> None:
        if event.kind == "progress":
            self.logger.debug(
                "%s.%s progress %.0f%%", event.flow, event.atom, (event.progress or 0) * 100
            )
        elif event.kind == "flow":
            self.logger.log(self.level, "flow %s -> %s", event.flow, event.state)
        elif event.failure is not None:
            self.logger.log(
                self.level, "%s.%s -> %s (%s)", event.flow, event.atom, event.state, event.failure
            )
        else:
            self.logger.log(self.level, "%s.%s -> %s", event.flow, event.atom, event.state)


class PrintingListener:
    """Prints one readable line per event (results and failures included)."""

    def __init__(self, file: TextIO | None = None, *, progress: bool = False) -> None:
        self.file = file
        self.show_progress = progress

    def __call__(self, event: Event) -> None:
        out = self.file if self.file is not None else sys.stdout
        if event.kind == "flow":
            print(f"flow {event.flow!r}: {event.state}", file=out)
        elif event.kind == "progress":
            if self.show_progress:
                print(f"  {event.atom}: {(event.progress or 0) * 100:.0f}%", file=out)
        else:
            line = f"  {event.atom}: {event.state}"
            if event.failure is not None:
                line += f" ({event.failure.exception_type}: {event.failure.message})"
            elif event.state == "SUCCESS" and event.result is not None:
                line += f" -> {event.result!r}"
            print(line, file=out)


class TimingListener:
    """Collects how long each atom's execute and revert took, in seconds."""

    def __init__(self) -> None:
        self.durations: dict[str, float] = {}
        self.revert_durations: dict[str, float] = {}

    def __call__(self, event: Event) -> None:
        if event.kind != "atom" or event.atom is None or event.duration is None:
            return
        if event.state in ("REVERTED", "REVERT_FAILURE"):
            self.revert_durations[event.atom] = event.duration
        else:
            self.durations[event.atom] = event.duration
