"""Retry controllers: what to do when an atom in a (sub)flow fails.

A controller guards a flow (`zag.linear("x", a, b, retry=zag.retry.Times(3))`)
or a single atom (`@zag.task(retry=...)`). It runs before the atoms it guards;
its result is provided to them (name it with `provides=`). When one of them
fails, `on_failure(history)` picks a `Decision`:

- `RETRY`: revert the guarded atoms, wait the delay, run the controller and
  the guarded atoms again;
- `REVERT`: revert the guarded atoms (and the controller), then let the
  enclosing controller decide; with none, revert the whole flow (a flow ends
  REVERTED only when everything that ran was compensated);
- `REVERT_ALL`: revert the whole flow.

Once an irreversible atom (a pivot) has succeeded nothing is reverted any
more: a RETRY runs the failed atom again in place (with the controller's
current value), and giving up ends the flow STUCK_PAST_PIVOT.

`RevertRetry` is the other direction: how often an atom's revert is tried
before compensation is declared incomplete (the flow ends UNCOMPENSATED).
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from .atom import Atom, Provides, Rebind
from .errors import ExecutionError, InvalidAtom
from .models import Attempt, History

__all__ = [
    "AlwaysRevert",
    "AlwaysRevertAll",
    "Attempt",
    "Decision",
    "ForEach",
    "History",
    "ParameterizedForEach",
    "Retry",
    "RevertRetry",
    "Times",
]


class Decision(StrEnum):
    RETRY = "RETRY"
    REVERT = "REVERT"
    REVERT_ALL = "REVERT_ALL"


@dataclass(frozen=True, slots=True)
class RevertRetry:
    """How an atom's revert is retried: `attempts` tries in all, pauses growing.

    A compensation that meets one transient error (a refund API timing out)
    should not leave the flow uncompensated. The pause before try n+1 is
    `delay * backoff**(n-1)`, at most `max_delay`. Tries are counted in the
    atom's stored record, so a crash between tries does not reset the count.
    Give `RevertRetry(attempts=1)` to try once.
    """

    attempts: int = 3
    delay: float = 0.25
    backoff: float = 2.0
    max_delay: float = 30.0

    def __post_init__(self) -> None:
        problem = self.problem()
        if problem is not None:
            raise InvalidAtom(f"RevertRetry: {problem}")

    def problem(self) -> str | None:
        """What is wrong with these settings, if anything."""
        if not isinstance(self.attempts, int) or isinstance(self.attempts, bool):
            return f"attempts must be a whole number >= 1, got {self.attempts!r}"
        if self.attempts < 1:
            return f"attempts must be a whole number >= 1, got {self.attempts!r}"
        for what in ("delay", "max_delay"):
            value = getattr(self, what)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                return f"{what} must be a number of seconds >= 0, got {value!r}"
        if not isinstance(self.backoff, (int, float)) or self.backoff < 1:
            return f"backoff must be >= 1, got {self.backoff!r}"
        return None

    def delay_before(self, failed: int) -> float:
        """Seconds to wait before the try that follows `failed` failed tries."""
        if failed < 1 or self.delay == 0:
            return 0.0
        return float(min(self.delay * self.backoff ** (failed - 1), self.max_delay))


#: What an atom's revert gets unless it says otherwise.
DEFAULT_REVERT_RETRY = RevertRetry()


class Retry(Atom):
    """Base of retry controllers; subclass and define `on_failure(history)`.

    `execute(history)` returns the value provided to the guarded atoms for the
    next attempt (by default the attempt number, starting at 1). `delay`,
    `backoff`, `max_delay` and `jitter` (seconds of random extra delay) set
    the wait before each new attempt.
    """

    is_retry = True

    def __init__(
        self,
        *,
        name: str | None = None,
        provides: Provides = None,
        rebind: Rebind = None,
        inject: Mapping[str, Any] | None = None,
        revert_all: bool = False,
        delay: float = 0.0,
        backoff: float = 1.0,
        max_delay: float | None = None,
        jitter: float = 0.0,
    ) -> None:
        self.explicit_name = name is not None
        self.revert_all = revert_all
        for what, value in (("delay", delay), ("jitter", jitter)):
            if not isinstance(value, (int, float)) or value < 0:
                raise InvalidAtom(
                    f"retry controller {name or type(self).__name__!r}: {what} must be >= 0"
                )
        if not isinstance(backoff, (int, float)) or backoff < 1:
            raise InvalidAtom(
                f"retry controller {name or type(self).__name__!r}: backoff must be >= 1"
            )
        self.delay = float(delay)
        self.backoff = float(backoff)
        self.max_delay = max_delay
        self.jitter = float(jitter)
        super().__init__(name=name, provides=provides, rebind=rebind, inject=inject)
        params = inspect.signature(self.on_failure).parameters
        self.on_failure_args = [p for p in params if p != "history"]

    def _arg_skip(self) -> tuple[str, ...]:
        return ("history",)

    def _execute_callable(self) -> Any:
        return self.execute

    def _revert_callable(self) -> Any:
        return self.revert if type(self).revert is not Retry.revert else None

    async def execute(self, history: History, **kwargs: Any) -> Any:
        return len(history) + 1

    async def revert(self, history: History, **kwargs: Any) -> Any:
        return None

    def on_failure(self, history: History) -> Decision:
        raise NotImplementedError

    def exhausted(self) -> Decision:
        """The decision once no attempts are left."""
        return Decision.REVERT_ALL if self.revert_all else Decision.REVERT

    def delay_before(self, failed_attempts: int) -> float:
        """Seconds to wait before the attempt that follows `failed_attempts` failures."""
        if self.delay == 0 and self.jitter == 0:
            return 0.0
        wait = self.delay * self.backoff ** max(failed_attempts - 1, 0)
        if self.max_delay is not None:
            wait = min(wait, self.max_delay)
        return wait + (random.uniform(0, self.jitter) if self.jitter else 0.0)


class Times(Retry):
    """Allow `attempts` runs in total, then give up (REVERT, or REVERT_ALL)."""

    def __init__(self, attempts: int = 1, **kwargs: Any) -> None:
        if not isinstance(attempts, int) or attempts < 1:
            raise InvalidAtom(f"Times needs a whole number of attempts >= 1, got {attempts!r}")
        self.attempts = attempts
        super().__init__(**kwargs)

    def on_failure(self, history: History) -> Decision:
        return Decision.RETRY if len(history) < self.attempts else self.exhausted()


class ForEach(Retry):
    """Try each value in turn (provided to the guarded atoms), then give up."""

    def __init__(self, values: Sequence[Any], **kwargs: Any) -> None:
        self.values = list(values)
        super().__init__(**kwargs)

    async def execute(self, history: History, **kwargs: Any) -> Any:
        return _next_value(self.name, self.values, history)

    def on_failure(self, history: History) -> Decision:
        return Decision.RETRY if len(history) < len(self.values) else self.exhausted()


class ParameterizedForEach(Retry):
    """Like ForEach, with the values read from the store (`rebind={"values": ...}`)."""

    async def execute(self, values: Sequence[Any], history: History) -> Any:  # type: ignore[override]
        return _next_value(self.name, list(values), history)

    def on_failure(self, history: History, values: Sequence[Any] = ()) -> Decision:
        return Decision.RETRY if len(history) < len(values) else self.exhausted()


class AlwaysRevert(Retry):
    """Never retry: revert the guarded atoms and defer to the enclosing controller."""

    async def execute(self, history: History, **kwargs: Any) -> Any:
        return None

    def on_failure(self, history: History) -> Decision:
        return Decision.REVERT


class AlwaysRevertAll(Retry):
    """Never retry: revert the whole flow."""

    async def execute(self, history: History, **kwargs: Any) -> Any:
        return None

    def on_failure(self, history: History) -> Decision:
        return Decision.REVERT_ALL


def _next_value(name: str, values: list[Any], history: History) -> Any:
    if not values:
        raise ExecutionError(f"retry controller {name!r} has no values to try (empty ForEach)")
    index = len(history)
    if index >= len(values):
        raise ExecutionError(f"retry controller {name!r} has tried all {len(values)} values")
    return values[index]
