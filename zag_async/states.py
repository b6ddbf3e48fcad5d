"""State names and the transitions allowed between them.

The tables follow TaskFlow's state machines; anything not listed raises
`InvalidTransition`, because it can only come from a bug in the engine.
"""

from __future__ import annotations

from enum import StrEnum

from .errors import InvalidTransition

__all__ = [
    "ENDED",
    "AtomState",
    "FlowState",
    "Intention",
    "check_atom_transition",
    "check_flow_transition",
]


class FlowState(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    REVERTED = "REVERTED"
    SUSPENDING = "SUSPENDING"
    SUSPENDED = "SUSPENDED"
    RESUMING = "RESUMING"
    #: Every branch that can still run is waiting for a signal or a timer;
    #: nothing runs and nothing is held until the flow is resumed.
    WAITING = "WAITING"
    #: The flow failed and compensation could not finish: some atoms that ran
    #: were not reverted (a revert kept failing). They are named in the flow's
    #: meta under "unreverted"; a person has to look.
    UNCOMPENSATED = "UNCOMPENSATED"
    #: The flow failed after an irreversible atom (a pivot) had succeeded: it
    #: retried forward, gave up and reverted nothing; a person has to finish it.
    #: (Names are at most 16 characters: the tables' state column.)
    STUCK_PAST_PIVOT = "STUCK_PAST_PIVOT"


class AtomState(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    REVERTING = "REVERTING"
    REVERTED = "REVERTED"
    REVERT_FAILURE = "REVERT_FAILURE"
    RETRYING = "RETRYING"
    IGNORE = "IGNORE"


class Intention(StrEnum):
    """What the engine means to do with an atom next (persisted for resumption)."""

    EXECUTE = "EXECUTE"
    REVERT = "REVERT"
    RETRY = "RETRY"
    IGNORE = "IGNORE"


F = FlowState
A = AtomState

#: The states a flow run ends in (nothing runs until it is reset).
ENDED: tuple[FlowState, ...] = (
    F.SUCCESS,
    F.REVERTED,
    F.FAILURE,
    F.UNCOMPENSATED,
    F.STUCK_PAST_PIVOT,
)

FLOW_TRANSITIONS: frozenset[tuple[FlowState, FlowState]] = frozenset(
    [
        (F.PENDING, F.RUNNING),
        (F.RUNNING, F.SUCCESS),
        (F.RUNNING, F.FAILURE),
        (F.RUNNING, F.REVERTED),
        (F.RUNNING, F.SUSPENDING),
        (F.RUNNING, F.RESUMING),
        (F.SUSPENDING, F.SUSPENDED),
        (F.SUSPENDING, F.SUCCESS),
        (F.SUSPENDING, F.FAILURE),
        (F.SUSPENDING, F.REVERTED),
        (F.SUSPENDING, F.RESUMING),
        (F.SUSPENDED, F.RUNNING),
        (F.SUCCESS, F.RUNNING),
        (F.SUCCESS, F.PENDING),
        (F.FAILURE, F.RUNNING),
        (F.REVERTED, F.PENDING),
        (F.RESUMING, F.SUSPENDED),
        # Waiting: entered only from a run whose runnable branches all wait, and left
        # only by running again (a resume). A waiting flow has nothing running, so it
        # is never SUSPENDED: suspending it would change nothing.
        (F.RUNNING, F.WAITING),
        (F.WAITING, F.RUNNING),
        # Compensation that could not finish, and a failure past a pivot: ends
        # like FAILURE, reached the same ways.
        (F.RUNNING, F.UNCOMPENSATED),
        (F.SUSPENDING, F.UNCOMPENSATED),
        (F.RUNNING, F.STUCK_PAST_PIVOT),
        (F.SUSPENDING, F.STUCK_PAST_PIVOT),
    ]
)

TASK_TRANSITIONS: frozenset[tuple[AtomState, AtomState]] = frozenset(
    [
        (A.PENDING, A.RUNNING),
        (A.PENDING, A.IGNORE),
        (A.RUNNING, A.SUCCESS),
        (A.RUNNING, A.FAILURE),
        (A.SUCCESS, A.REVERTING),
        (A.FAILURE, A.REVERTING),
        (A.REVERTING, A.REVERTED),
        (A.REVERTING, A.REVERT_FAILURE),
        (A.REVERTED, A.PENDING),
        (A.IGNORE, A.PENDING),
        # Past a pivot a failed atom is run again in place, not reverted first.
        (A.FAILURE, A.PENDING),
    ]
)

RETRY_TRANSITIONS: frozenset[tuple[AtomState, AtomState]] = TASK_TRANSITIONS | {
    (A.SUCCESS, A.RETRYING),
    (A.RETRYING, A.RUNNING),
}


def check_flow_transition(flow: str, old: FlowState, new: FlowState) -> None:
    if (old, new) not in FLOW_TRANSITIONS:
        raise InvalidTransition("flow", flow, old, new)


def check_atom_transition(
    atom: str, old: AtomState, new: AtomState, *, retry: bool = False
) -> None:
    if (old, new) not in (RETRY_TRANSITIONS if retry else TASK_TRANSITIONS):
        raise InvalidTransition("retry controller" if retry else "atom", atom, old, new)
