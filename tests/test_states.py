"""The state machines of SEMANTICS.md: allowed transitions pass, everything else is refused.

The tables below are written out from SEMANTICS.md on purpose, not imported
from `zag_async.states`, so the test checks the library against the spec.
"""

from __future__ import annotations

import itertools

import pytest

from zag_async.errors import InvalidTransition
from zag_async.states import AtomState, FlowState, check_atom_transition, check_flow_transition

F = FlowState
A = AtomState

FLOW_ALLOWED = {
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
    (F.RUNNING, F.WAITING),
    (F.WAITING, F.RUNNING),
    # "a state that says compensation is incomplete", and the one past a pivot
    (F.RUNNING, F.UNCOMPENSATED),
    (F.SUSPENDING, F.UNCOMPENSATED),
    (F.RUNNING, F.STUCK_PAST_PIVOT),
    (F.SUSPENDING, F.STUCK_PAST_PIVOT),
}

TASK_ALLOWED = {
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
    (A.FAILURE, A.PENDING),  # past a pivot, "retries forward" in place
}

RETRY_ONLY = {(A.SUCCESS, A.RETRYING), (A.RETRYING, A.RUNNING)}
RETRY_ALLOWED = TASK_ALLOWED | RETRY_ONLY

FLOW_PAIRS = list(itertools.product(FlowState, repeat=2))
ATOM_PAIRS = list(itertools.product(AtomState, repeat=2))


def _id(pair: tuple[str, str]) -> str:
    return f"{pair[0]}->{pair[1]}"


def test_state_names() -> None:
    flow = (
        "PENDING RUNNING SUCCESS FAILURE REVERTED SUSPENDING SUSPENDED RESUMING WAITING"
        " UNCOMPENSATED STUCK_PAST_PIVOT"
    )
    atom = "PENDING RUNNING SUCCESS FAILURE REVERTING REVERTED REVERT_FAILURE RETRYING IGNORE"
    assert {s.value for s in FlowState} == set(flow.split())
    assert {s.value for s in AtomState} == set(atom.split())


@pytest.mark.parametrize("pair", sorted(FLOW_ALLOWED), ids=_id)
def test_flow_allowed(pair: tuple[FlowState, FlowState]) -> None:
    check_flow_transition("f", *pair)


@pytest.mark.parametrize("pair", [p for p in FLOW_PAIRS if p not in FLOW_ALLOWED], ids=_id)
def test_flow_forbidden(pair: tuple[FlowState, FlowState]) -> None:
    old, new = pair
    with pytest.raises(InvalidTransition) as info:
        check_flow_transition("orders", old, new)
    message = str(info.value)
    assert "orders" in message and old in message and new in message
    assert (info.value.name, info.value.old, info.value.new) == ("orders", old, new)


@pytest.mark.parametrize("pair", sorted(TASK_ALLOWED), ids=_id)
def test_task_allowed(pair: tuple[AtomState, AtomState]) -> None:
    check_atom_transition("t", *pair)


@pytest.mark.parametrize("pair", [p for p in ATOM_PAIRS if p not in TASK_ALLOWED], ids=_id)
def test_task_forbidden(pair: tuple[AtomState, AtomState]) -> None:
    old, new = pair
    with pytest.raises(InvalidTransition) as info:
        check_atom_transition("charge", old, new)
    message = str(info.value)
    assert "charge" in message and old in message and new in message


@pytest.mark.parametrize("pair", sorted(RETRY_ALLOWED), ids=_id)
def test_retry_allowed(pair: tuple[AtomState, AtomState]) -> None:
    check_atom_transition("r", *pair, retry=True)


@pytest.mark.parametrize("pair", [p for p in ATOM_PAIRS if p not in RETRY_ALLOWED], ids=_id)
def test_retry_forbidden(pair: tuple[AtomState, AtomState]) -> None:
    with pytest.raises(InvalidTransition):
        check_atom_transition("r", *pair, retry=True)


@pytest.mark.parametrize("pair", sorted(RETRY_ONLY), ids=_id)
def test_retry_only_transitions_refused_for_tasks(pair: tuple[AtomState, AtomState]) -> None:
    with pytest.raises(InvalidTransition):
        check_atom_transition("t", *pair)
    check_atom_transition("t.retry", *pair, retry=True)


@pytest.mark.parametrize("retry", [False, True], ids=["task", "retry"])
@pytest.mark.parametrize("new", list(AtomState))
def test_revert_failure_is_terminal(new: AtomState, retry: bool) -> None:
    with pytest.raises(InvalidTransition):
        check_atom_transition("t", A.REVERT_FAILURE, new, retry=retry)
