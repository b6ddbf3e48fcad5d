"""HTTP answers for flows: one mapping from how a flow ended to a status code.

A web handler that awaits a flow should answer the way HTTP clients expect,
whatever framework it runs in; `http_status` says which code, so the FastAPI and
aiohttp helpers (and a user's own handlers) agree:

    status = await service.run("myapp.flows:order", store=...)
    return JSONResponse(status.to_dict(), status_code=http_status(status))

Unknown flow or job ids (`zag_async.errors.NotFound`, `JobNotFound`) are 404 and
malformed input 422; both are raised before any flow runs, so the framework
helpers map them (see `zag_async.contrib.fastapi` and `zag_async.contrib.aiohttp`).
"""

from __future__ import annotations

from ..states import FlowState
from ..status import FlowStatus

__all__ = ["FLOW_HTTP_STATUS", "http_status"]

#: How a flow awaited in a request ended, as an HTTP status code.
FLOW_HTTP_STATUS: dict[FlowState, int] = {
    FlowState.SUCCESS: 200,
    # The flow failed on a rule of its own and everything it did was undone:
    # the request conflicts with the state of things, nothing is left half-done.
    FlowState.REVERTED: 409,
    # Not finished yet (waiting for a signal or a timer, or still running):
    # accepted, the flow's status URL tells the rest.
    FlowState.WAITING: 202,
    FlowState.RUNNING: 202,
    FlowState.PENDING: 202,
    FlowState.RESUMING: 202,
    # Stopped by a shutdown: it resumes with the next start; try again later.
    FlowState.SUSPENDING: 503,
    FlowState.SUSPENDED: 503,
    # Compensation could not finish: a person has to look. The only 500s.
    FlowState.FAILURE: 500,
    FlowState.UNCOMPENSATED: 500,
    FlowState.STUCK_PAST_PIVOT: 500,
}


def http_status(status: FlowStatus) -> int:
    """The HTTP status code for a flow's `FlowStatus` (see `FLOW_HTTP_STATUS`).

    200 SUCCESS; 409 REVERTED (failed on a business rule, fully undone); 202 not
    finished (waiting or running); 503 suspended by a shutdown; 500 only when the
    flow could not be undone (FAILURE, UNCOMPENSATED, STUCK_PAST_PIVOT).
    """
    return FLOW_HTTP_STATUS[FlowState(status.state)]
