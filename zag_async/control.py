"""Suspend or cancel a stored flow from anywhere: another process, a web page, a script.

    await zag.suspend_flow(flow_id, backend=backend, by="ann")
    await zag.cancel_flow(flow_id, backend=backend, by="ann", reason="customer left")

A request is stored durably with the flow (a signal of the reserved event
`zag.control`, which no wait can declare), so it reaches the engine running
the flow wherever that is: an engine in this process is told at once, one in
another process finds it when it next renews its lease (every third of the
lease's term: 10 s by default), and a flow that runs nowhere now (WAITING or
SUSPENDED) finds it when it is next resumed.

- Suspend: running atoms finish, nothing new starts, the flow ends SUSPENDED
  and stays so (a conductor parks its job) until someone resumes it.
- Cancel: nothing new starts and everything that ran is reverted, last first;
  the flow ends REVERTED (UNCOMPENSATED if a revert fails for good) and `run()`
  raises `FlowCancelled`. A flow past an irreversible atom (a pivot) cannot be
  cancelled: the engine logs that and carries on.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from .codec import storable_text
from .errors import ConfigurationError, ControlRefused, FlowCancelled, NotFound
from .models import new_id
from .states import ENDED, FlowState
from .waiting import job_of

if TYPE_CHECKING:
    from .engine import Engine
    from .models import Signal
    from .persistence.base import Backend
    from .waiting import Wakes

__all__ = ["CONTROL_EVENT", "Request", "cancel_flow", "cancellation", "suspend_flow"]

#: The reserved signal event control requests are stored under.
CONTROL_EVENT = "zag.control"
#: The flow meta keys an applied request leaves: who asked, when and why.
CANCELLED_KEY = "cancelled"
SUSPENDED_KEY = "suspended_by"

Action = Literal["suspend", "cancel"]

#: Engines running in this process, by flow id (told at once, not at their next beat).
LIVE: dict[str, Engine] = {}


class Request(dict[str, Any]):
    """A control request as stored: {"action", "by", "reason", "at"}."""

    @classmethod
    def read(cls, payload: Any) -> Request | None:
        """The request a stored payload holds, or None for anything malformed."""
        if not isinstance(payload, dict) or payload.get("action") not in ("suspend", "cancel"):
            return None
        by, reason, at = payload.get("by"), payload.get("reason"), payload.get("at")
        return cls(
            action=payload["action"],
            by=by if isinstance(by, str) else "",
            reason=reason if isinstance(reason, str) else "",
            at=at if isinstance(at, (int, float)) and not isinstance(at, bool) else None,
        )


def cancellation(flow: str, meta: Mapping[str, Any]) -> FlowCancelled | None:
    """The error a flow cancelled on request ended with (from its meta), else None."""
    request = meta.get(CANCELLED_KEY)
    if not isinstance(request, dict):
        return None
    return FlowCancelled(flow, str(request.get("by") or ""), str(request.get("reason") or ""))


def check_text(what: str, value: Any, most: int) -> str:
    """`value` if it is a string every database stores, of at most `most` characters."""
    if not storable_text(value) or len(value) > most:
        raise ConfigurationError(
            f"{what} must be a string of at most {most} characters (no NUL), got {value!r:.80}"
        )
    return value


async def _request(
    action: Action,
    flow_id: str,
    backend: Backend,
    board: Wakes | None,
    by: str,
    reason: str,
) -> Signal:
    check_text("by", by, 200)
    check_text("reason", reason, 2000)
    if not storable_text(flow_id) or not 0 < len(flow_id) <= 36:
        raise ControlRefused(str(flow_id), action, "no such flow", kind="unknown_flow")
    try:
        detail = backend.flow_from_row(await backend.load_flow_row(flow_id))
    except NotFound:
        raise ControlRefused(flow_id, action, "no such flow", kind="unknown_flow") from None
    if detail.state in ENDED:
        raise ControlRefused(
            flow_id, action, f"the flow has finished ({detail.state})", kind="finished"
        )
    if action == "suspend" and detail.state not in (
        FlowState.PENDING,
        FlowState.RUNNING,
        FlowState.RESUMING,
    ):
        raise ControlRefused(
            flow_id, action, f"the flow is {detail.state}: nothing runs", kind="not_running"
        )
    payload = {"action": action, "by": by, "reason": reason, "at": time.time()}
    stored, _ = await backend.add_signal(flow_id, CONTROL_EVENT, payload, new_id())
    engine = LIVE.get(flow_id)
    if engine is not None:
        engine.check_control()
    elif board is not None and action == "cancel":
        # A parked (waiting or suspended) flow's job becomes due: its resume applies this.
        await board.wake(job_of(detail))
    return stored


async def suspend_flow(flow_id: str, *, backend: Backend, by: str = "", reason: str = "") -> Signal:
    """Ask the engine running `flow_id` to suspend it; returns the stored request.

    Raises:
        ControlRefused: the flow does not exist, has finished, or is not running
            (a WAITING or SUSPENDED flow holds nothing: there is nothing to suspend).
        ConfigurationError: `by` or `reason` is not a short string.
    """
    return await _request("suspend", flow_id, backend, None, by, reason)


async def cancel_flow(
    flow_id: str,
    *,
    backend: Backend,
    board: Wakes | None = None,
    by: str = "",
    reason: str = "",
) -> Signal:
    """Ask for `flow_id` to be cancelled: everything it did is reverted; returns the request.

    A running flow is cancelled by its engine (at once in this process, at its
    next lease renewal elsewhere). A WAITING or SUSPENDED flow is cancelled when
    it is next resumed: with `board`, its job is made due now so a conductor
    does that at once; without one, resume it (`zag.resume`).

    Raises:
        ControlRefused: the flow does not exist or has finished.
        ConfigurationError: `by` or `reason` is not a short string.
    """
    return await _request("cancel", flow_id, backend, board, by, reason)
