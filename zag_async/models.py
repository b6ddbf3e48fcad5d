"""What is recorded about flows: LogBook -> FlowDetail -> AtomDetail.

These are plain in-memory records. The engine mutates them through `Storage`;
backends turn them into rows (through a `Codec`) and back.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from .failure import Failure
from .retry import History
from .states import AtomState, FlowState, Intention

__all__ = ["AtomDetail", "FlowDetail", "FlowSummary", "LogBook", "new_id"]


def new_id() -> str:
    return str(uuid.uuid4())


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
    same flow at once. `owner` names who holds it (a conductor's claim).
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
