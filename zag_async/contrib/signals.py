"""The signal route both web helpers serve: `POST {prefix}/flows/{flow_id}/signals/{event}`.

An approval button or a provider's webhook reaches a waiting flow over HTTP.
The FastAPI and aiohttp routes are thin over `deliver()`, which turns a
request's parts into one `ZagService.signal` call and its outcome into a
status and a JSON body, so both frameworks answer alike:

    202  the signal is stored: {id, flow_id, event, arrived_at}; sending the same
         signal id again answers the first signal, stores nothing (also once the
         flow has taken it and finished)
    404  no such flow
    409  the flow has finished, or none of its waits declares the event, or the
         signal id was already used for another flow or event
    422  the body is not JSON (or nests too deeply), or the signal id is not
         1 to 200 characters
    503  the service is shutting down

The body, whole, is the signal's payload (an empty body is `null`); the signal
id comes from the `Idempotency-Key` header or the `signal_id` query parameter.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigurationError, ExecutionError, SignalRefused
from ..service import ZagService
from ..status import iso_utc

__all__ = ["PATH", "Reply", "deliver"]

#: The route's path below the prefix.
PATH = "/flows/{flow_id}/signals/{event}"
#: How deep a payload may nest (the codec and the JSON writer recurse).
MAX_DEPTH = 100


@dataclass(frozen=True, slots=True)
class Reply:
    """What to answer: an HTTP status and a JSON body."""

    status: int
    body: dict[str, Any]


def _problem(status: int, detail: str) -> Reply:
    return Reply(status, {"detail": detail})


async def deliver(
    service: ZagService,
    flow_id: str,
    event: str,
    body: bytes,
    *,
    signal_id: str | None = None,
    idempotency_key: str | None = None,
) -> Reply:
    """Send the signal a request carries; the reply says how it went (see the module)."""
    if signal_id is not None and idempotency_key is not None and signal_id != idempotency_key:
        return _problem(422, "the Idempotency-Key header and ?signal_id= differ; give one")
    signal_id = idempotency_key if idempotency_key is not None else signal_id
    try:
        payload = json.loads(body) if body.strip() else None
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        return _problem(422, f"the body must be JSON (the signal's payload): {exc}")
    if _too_deep(payload):
        return _problem(422, f"the payload nests deeper than {MAX_DEPTH} levels")
    try:
        stored = await service.signal(flow_id, event, payload, signal_id=signal_id)
    except ConfigurationError as exc:
        return _problem(422, str(exc))
    except SignalRefused as exc:
        return _problem(404 if exc.kind == "unknown_flow" else 409, str(exc))
    except ExecutionError as exc:  # the service is closing or stopped
        return _problem(503, str(exc))
    return Reply(
        202,
        {
            "id": stored.id,
            "flow_id": stored.flow_id,
            "event": stored.event,
            "arrived_at": iso_utc(stored.created_at),
        },
    )


def _too_deep(value: Any) -> bool:
    """True when `value` nests lists and objects deeper than MAX_DEPTH."""
    level = [value]
    for _ in range(MAX_DEPTH):
        level = [
            item
            for v in level
            if isinstance(v, dict | list)
            for item in (v.values() if isinstance(v, dict) else v)
        ]
        if not level:
            return False
    return any(isinstance(v, dict | list) for v in level)
