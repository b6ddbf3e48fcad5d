"""What is recorded about flows: LogBook -> FlowDetail -> AtomDetail, and a retry
controller's History.

These are plain in-memory records. The engine mutates them through `Storage`;
backends turn them into rows (through a `Codec`) and back.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

from .failure import Failure
from .states import AtomState, FlowState, Intention

__all__ = [
    "Action",
    "AtomDetail",
    "Attempt",
    "FlowDetail",
    "FlowSummary",
    "History",
    "LogBook",
    "Signal",
    "new_id",
]


def new_id() -> str:
    return str(uuid.uuid4())


@dataclass(slots=True)
class Attempt:
    """One run of the guarded atoms: what the controller provided and what failed."""

    value: Any
    failures: dict[str, Failure] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "failures": {k: f.to_dict() for k, f in self.failures.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Attempt:
        return cls(data["value"], {k: Failure.from_dict(f) for k, f in data["failures"].items()})


class History(Sequence[Attempt]):
    """The attempts made so far under one controller, oldest first."""

    __slots__ = ("_attempts",)

    def __init__(self, attempts: Sequence[Attempt] = ()) -> None:
        self._attempts = list(attempts)

    @overload
    def __getitem__(self, index: int) -> Attempt: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Attempt]: ...
    def __getitem__(self, index: int | slice) -> Attempt | Sequence[Attempt]:
        return self._attempts[index]

    def __len__(self) -> int:
        return len(self._attempts)

    def __iter__(self) -> Iterator[Attempt]:
        return iter(self._attempts)

    @property
    def failures(self) -> dict[str, Failure]:
        """Failures of the latest attempt."""
        return dict(self._attempts[-1].failures) if self._attempts else {}

    @property
    def values(self) -> list[Any]:
        return [a.value for a in self._attempts]

    def add_attempt(self, value: Any) -> None:
        self._attempts.append(Attempt(value))

    def add_failure(self, atom: str, failure: Failure) -> None:
        if not self._attempts:
            self._attempts.append(Attempt(None))
        self._attempts[-1].failures[atom] = failure

    def copy(self) -> History:
        return History([Attempt(a.value, dict(a.failures)) for a in self._attempts])

    def to_list(self) -> list[dict[str, Any]]:
        return [a.to_dict() for a in self._attempts]

    @classmethod
    def from_list(cls, data: Sequence[Mapping[str, Any]]) -> History:
        return cls([Attempt.from_dict(d) for d in data])

    def __repr__(self) -> str:
        return f"History({self._attempts!r})"


@dataclass(slots=True, eq=False)
class AtomDetail:
    """Everything recorded about one atom of one flow."""

    name: str
    kind: str = "task"  #: "task" or "retry"
    state: AtomState = AtomState.PENDING
    intention: Intention = Intention.EXECUTE
    result: Any = None
    failure: Failure | None = None
    revert_result: Any = None
    revert_failure: Failure | None = None
    history: History | None = None  #: retry controllers: the attempts so far
    duration: float | None = None  #: seconds the last execute (or revert) took
    attempts: int = 0  #: how many times execute was started
    meta: dict[str, Any] | None = None
    position: int = 0  #: the atom's place in the flow (listings keep flow order)


@dataclass(slots=True, eq=False)
class FlowDetail:
    """One run of a flow: its state, its initial store and its atoms' details.

    `version` counts committed writes; a backend refuses a write whose
    version is stale (`ConcurrentUpdate`), so two engines never advance the
    same flow at once. `owner` names who holds it (a conductor's claim);
    `lease_owner` and `lease_expires` (epoch seconds, by the database's clock)
    are the lease of the engine running it, as last read or taken; setting
    `lease_term` makes the next save write the lease (see `Backend.save`).
    """

    name: str
    uuid: str = field(default_factory=new_id)
    state: FlowState = FlowState.PENDING
    atoms: dict[str, AtomDetail] = field(default_factory=dict)
    store: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    logbook: str | None = None
    owner: str | None = None
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    version: int = 0
    lease_owner: str | None = None
    lease_expires: float | None = None
    lease_term: float | None = None


@dataclass(slots=True, eq=False)
class LogBook:
    """A named group of flow details (for example, one per service or tenant)."""

    name: str
    uuid: str = field(default_factory=new_id)
    meta: dict[str, Any] = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class FlowSummary:
    """One line of a flow listing (no atoms loaded)."""

    uuid: str
    name: str
    state: FlowState
    logbook: str | None
    owner: str | None
    created_at: float
    updated_at: float
    version: int


@dataclass(frozen=True, slots=True)
class Signal:
    """One signal sent to a flow, as stored (see `zag_async.waiting`).

    `seq` is the arrival order; `created_at` the database's clock when it was
    stored; `taken_by` the token of the wait that consumed it (None: pending).
    """

    id: str
    flow_id: str
    event: str
    payload: Any
    seq: int
    created_at: float
    taken_by: str | None = None


@dataclass(frozen=True, slots=True)
class Action:
    """One operator action, as recorded (an audit log: kept when its flow is deleted).

    `id` is the recording order; `at` the database's clock when it was stored;
    `target` the flow or job acted on; `detail` free text (say, the signal's event).
    """

    id: int
    at: float
    who: str
    action: str
    target: str
    detail: str = ""
