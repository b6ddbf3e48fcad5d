"""The trace hooks a worker and an executor accept, so neither imports OpenTelemetry.

`zag_async.telemetry.trace_workers()` builds an object with these hooks; it is
passed explicitly (`Worker(..., tracing=hooks)`, `RemoteExecutor(...,
tracing=hooks)`). Without one, requests carry no trace context and cost
nothing extra.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from typing import Any, Protocol

from .protocol import Request, Response

__all__ = ["TracingHooks"]


class TracingHooks(Protocol):
    """Trace propagation through request headers."""

    def inject(self, headers: dict[str, Any]) -> None:
        """Engine side: put the current trace context into a request's headers."""
        ...

    def remote_span(
        self, request: Request, headers: Mapping[str, Any], worker: str
    ) -> AbstractContextManager[Callable[[Response], object]]:
        """Worker side: a span continuing the headers' trace; yields a recorder of the outcome."""
        ...
