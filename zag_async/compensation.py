"""Judging compensation: what a failed run left undone, and how it ends.

zag-async keeps one promise TaskFlow does not: a flow ends REVERTED only when
every atom that ran was reverted (TaskFlow could end REVERTED with a charge
never refunded). The scheduler does the reverting; this module reads the atom
records afterwards and says which end that was:

- REVERTED: everything that ran was reverted;
- UNCOMPENSATED: some atoms that ran are not reverted (a revert kept failing
  past its `RevertRetry`); they are named;
- STUCK_PAST_PIVOT: an irreversible atom (a pivot) had succeeded, so nothing
  was reverted, and a later failure outlasted its retries; or a pivot declared
  idempotent=False was cut off by a crash, so it may have taken effect.

It also keeps the durable counter of revert tries. Everything here is read
from the records alone, so a resumed run (or a status reader) reaches the
same answer as the run that wrote them.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

from .compiler import Node
from .errors import AtomInterrupted
from .models import AtomDetail, FlowDetail
from .states import AtomState, FlowState

__all__ = [
    "UNDONE_ENDS",
    "UNREVERTED_KEY",
    "clear_revert_tries",
    "count_revert_try",
    "failed_end",
    "pivot_passed",
    "revert_tries",
    "unreverted",
    "unreverted_of",
    "warn_defer_reverts",
]

S = AtomState

#: The end states that leave atoms un-reverted (their flow events name them).
UNDONE_ENDS = (FlowState.UNCOMPENSATED, FlowState.STUCK_PAST_PIVOT)
#: The flow meta key naming the atoms a failed run left un-reverted.
UNREVERTED_KEY = "unreverted"
#: The atom meta key counting revert tries (launches, so a crash counts too).
_TRIES_KEY = "revert_tries"

#: States of an atom that ran and was not (or not yet) undone.
_UNDONE = (S.SUCCESS, S.FAILURE, S.REVERTING, S.REVERT_FAILURE)


def pivot_passed(nodes: Sequence[Node], details: Sequence[AtomDetail]) -> bool:
    """True once an irreversible atom has succeeded, or may have (a launch of a
    non-idempotent one that a crash cut off): there is no going back."""
    return any(n.atom.is_pivot and _may_have_run(details[n.index]) for n in nodes)


def _may_have_run(detail: AtomDetail) -> bool:
    if detail.state is S.SUCCESS:
        return True
    failure = detail.failure
    interrupted = failure is not None and failure.check(AtomInterrupted) is not None
    return detail.state is S.FAILURE and interrupted


def unreverted(nodes: Sequence[Node], details: Sequence[AtomDetail]) -> list[str]:
    """Atoms that ran and are not reverted, in flow order.

    Retry controllers without a revert of their own do nothing that needs
    undoing, so they are never named.
    """
    return [
        n.name
        for n in nodes
        if details[n.index].state in _UNDONE and not (n.is_retry and n.atom.revert_fn is None)
    ]


def failed_end(nodes: Sequence[Node], details: Sequence[AtomDetail]) -> FlowState:
    """How a run with failures ends: REVERTED, UNCOMPENSATED or STUCK_PAST_PIVOT."""
    if pivot_passed(nodes, details):
        return FlowState.STUCK_PAST_PIVOT
    if unreverted(nodes, details):
        return FlowState.UNCOMPENSATED
    return FlowState.REVERTED


def unreverted_of(detail: FlowDetail) -> tuple[str, ...]:
    """The atoms a stored flow's run left un-reverted (empty unless it ended so)."""
    names = detail.meta.get(UNREVERTED_KEY)
    return tuple(names) if names else ()


def revert_tries(detail: AtomDetail) -> int:
    """How many times this atom's revert was started since it last ran."""
    return int(detail.meta.get(_TRIES_KEY, 0)) if detail.meta else 0


def count_revert_try(detail: AtomDetail) -> int:
    """Count one more revert try (stored with the launch); returns the count."""
    tries = revert_tries(detail) + 1
    if detail.meta is None:
        detail.meta = {}
    detail.meta[_TRIES_KEY] = tries
    return tries


def clear_revert_tries(detail: AtomDetail) -> None:
    """Forget the revert tries (the atom is about to run afresh)."""
    if detail.meta:
        detail.meta.pop(_TRIES_KEY, None)


def warn_defer_reverts() -> None:
    """Warn the caller of `Engine`/`zag.run` that `defer_reverts` no longer does anything."""
    warnings.warn(
        "defer_reverts is deprecated and ignored: a retry controller that gives up "
        "with no enclosing controller now always reverts the whole flow",
        DeprecationWarning,
        stacklevel=3,
    )
