"""OpenTelemetry traces of flows, atoms and remote requests (`pip install 'zag-async[otel]'`).

    from zag_async.telemetry import Tracing

    await zag.Engine(flow, listeners=[Tracing()]).run()

Spans, with the attributes `zag.flow`, `zag.flow_id`, `zag.atom`, `zag.action`
(execute or revert), `zag.attempt` and `zag.state` (the state the call or run
ended in):

    zag.flow <flow>          one per `run()` (a resumed flow gets a new one)
      zag.atom <atom>        one per execute attempt: a retried atom has one per attempt
      zag.revert <atom>      one per revert (a span, not an event: a revert runs code,
                             possibly on a remote worker)
        zag.remote <atom>    on the worker that ran the request (`trace_workers()` hooks)

A failure is recorded on its span (an `exception` event and status ERROR); so
is the exception a failed run raises, on the flow span. A call cancelled with
its run ends with `zag.state` CANCELLED (the atom stays RUNNING and runs again
on resume). `zag.progress()` reports become `zag.progress` events of the atom
span; atoms a decider skips and retry controllers restarting their subflow
become `zag.ignored` and `zag.retrying` events of the flow span.

Importing this module needs `opentelemetry-api`; `import zag_async` does not
import it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator, Mapping
from contextvars import Token
from types import TracebackType
from typing import TYPE_CHECKING, Literal

from . import __version__
from .errors import ConfigurationError
from .events import Event
from .failure import Failure, error_text

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
    from opentelemetry.context import Context
    from opentelemetry.propagators.textmap import Getter
    from opentelemetry.trace import Span, SpanKind, Status, StatusCode
    from opentelemetry.util.types import AttributeValue
except ImportError as exc:  # pragma: no cover - depends on installed extras
    raise ConfigurationError(f"tracing needs: pip install 'zag-async[otel]' ({exc})") from exc

if TYPE_CHECKING:
    from .engine import Engine
    from .workers.protocol import Request, Response
    from .workers.tracing import TracingHooks

    def _hooks_fit(hooks: WorkerTracing) -> TracingHooks:
        return hooks  # mypy checks WorkerTracing against the workers' protocol


__all__ = ["Tracing", "WorkerTracing", "trace_workers"]

_SCOPE = "zag_async"
_END_STATES = {
    ("execute", True): "SUCCESS",
    ("execute", False): "FAILURE",
    ("revert", True): "REVERTED",
    ("revert", False): "REVERT_FAILURE",
}


class Tracing:
    """Traces engines: pass it as a listener, `zag.Engine(flow, listeners=[Tracing()])`.

    One object may serve any number of engines, concurrently.

    Args:
        tracer_provider: where spans go; None uses the global provider
            (`opentelemetry.trace.set_tracer_provider`).
    """

    def __init__(self, *, tracer_provider: trace.TracerProvider | None = None) -> None:
        self._tracer = trace.get_tracer(_SCOPE, __version__, tracer_provider=tracer_provider)
        # Span ids of the spans open now, so events land only on our own spans.
        self._flows: set[int] = set()
        self._atoms: set[int] = set()

    def __call__(self, event: Event) -> None:
        """Turn progress, skips and retries into span events (spans come from the scopes)."""
        if event.kind == "progress":
            # Reported from inside the task: its atom span is the current one.
            span = trace.get_current_span()
            if span.get_span_context().span_id in self._atoms:
                span.add_event("zag.progress", {"zag.progress": event.progress or 0.0})
        elif event.kind == "atom" and event.state in ("IGNORE", "RETRYING"):
            # Emitted by the engine's own loop: the flow span is the current one.
            span = trace.get_current_span()
            if span.get_span_context().span_id in self._flows:
                name = "zag.ignored" if event.state == "IGNORE" else "zag.retrying"
                span.add_event(name, {"zag.atom": event.atom or ""})

    @contextlib.contextmanager
    def flow_scope(self, engine: Engine) -> Iterator[None]:
        """The flow span, current for the whole `run()` (the engine calls this)."""
        attributes: dict[str, AttributeValue] = {
            "zag.flow": engine.name,
            "zag.flow_id": engine.flow_id,
        }
        with self._span(f"zag.flow {engine.name}", attributes) as span:
            key = span.get_span_context().span_id
            self._flows.add(key)
            try:
                yield
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, error_text(exc)))
                raise
            finally:
                self._flows.discard(key)
                span.set_attribute("zag.state", str(engine.state))

    def atom_scope(
        self, engine: Engine, atom: str, action: Literal["execute", "revert"], attempt: int
    ) -> _AtomSpan:
        """The span of one execute or revert call (the engine calls this)."""
        attributes: dict[str, AttributeValue] = {
            "zag.flow": engine.name,
            "zag.flow_id": engine.flow_id,
            "zag.atom": atom,
            "zag.action": action,
            "zag.attempt": attempt,
        }
        kind = "zag.atom" if action == "execute" else "zag.revert"
        return _AtomSpan(
            self._atoms, self._tracer.start_span(f"{kind} {atom}", attributes=attributes), action
        )

    def _span(
        self, name: str, attributes: dict[str, AttributeValue]
    ) -> contextlib.AbstractContextManager[Span]:
        # Failures are recorded by hand: most never reach the scope as exceptions.
        return self._tracer.start_as_current_span(
            name, attributes=attributes, record_exception=False, set_status_on_exception=False
        )


class _AtomSpan:
    """One call's span, current while the call runs (a class: this is per atom, keep it cheap)."""

    __slots__ = ("_action", "_live", "_span", "_token")

    def __init__(self, live: set[int], span: Span, action: str) -> None:
        self._live = live
        self._span = span
        self._action = action
        self._token: Token[Context] | None = None

    def __enter__(self) -> Callable[[Failure | None], None]:
        self._token = otel_context.attach(trace.set_span_in_context(self._span))
        self._live.add(self._span.get_span_context().span_id)
        return self.record

    def record(self, failure: Failure | None) -> None:
        """The call's outcome: its end state, and its failure if any."""
        self._span.set_attribute("zag.state", _END_STATES[self._action, failure is None])
        if failure is not None:
            _record_failure(self._span, failure)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._live.discard(self._span.get_span_context().span_id)
        if exc_type is not None and issubclass(exc_type, asyncio.CancelledError):
            self._span.set_attribute("zag.state", "CANCELLED")
        if self._token is not None:
            otel_context.detach(self._token)
        self._span.end()


def _record_failure(span: Span, failure: Failure) -> None:
    """An exception event and status ERROR, from the live exception or its record."""
    if failure.exception is not None:
        span.record_exception(failure.exception)
    else:  # it happened elsewhere (a remote worker) or was loaded from storage
        span.add_event(
            "exception",
            {
                "exception.type": failure.exception_type,
                "exception.message": failure.message,
                "exception.stacktrace": failure.traceback,
            },
        )
    span.set_status(Status(StatusCode.ERROR, error_text(failure)))


# -- remote workers ---------------------------------------------------------------------


class _HeaderGetter(Getter[Mapping[str, object]]):
    """Reads trace context from AMQP headers (values may arrive as bytes)."""

    def get(self, carrier: Mapping[str, object], key: str) -> list[str] | None:
        value = carrier.get(key)
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        return [value] if isinstance(value, str) else None

    def keys(self, carrier: Mapping[str, object]) -> list[str]:
        return list(carrier)


_GETTER = _HeaderGetter()


class WorkerTracing:
    """Trace hooks for remote workers: pass to `Worker(tracing=)` and `RemoteExecutor(tracing=)`.

    Built by `trace_workers()`; one object may serve any number of workers
    and executors.
    """

    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer

    def inject(self, headers: dict[str, object]) -> None:
        """Engine side: the current trace context (the atom span) into a request's headers."""
        propagate.inject(headers)

    @contextlib.contextmanager
    def remote_span(
        self, request: Request, headers: Mapping[str, object], worker: str
    ) -> Iterator[Callable[[Response], None]]:
        """Worker side: run a request in a span continuing the engine's trace."""
        parent = propagate.extract(headers, getter=_GETTER)
        name = request.atom or request.task
        action = "revert" if request.action == "revert" else "execute"
        attributes: dict[str, AttributeValue] = {
            "zag.flow": request.flow,
            "zag.atom": name,
            "zag.action": action,
            "zag.task": request.task,
            "zag.worker": worker,
        }
        with self._tracer.start_as_current_span(
            f"zag.remote {name}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:

            def record(response: Response) -> None:
                ok = response.kind == "result"
                span.set_attribute("zag.state", _END_STATES[action, ok])
                if response.failure is not None:
                    _record_failure(span, response.failure)

            yield record


def trace_workers(*, tracer_provider: trace.TracerProvider | None = None) -> WorkerTracing:
    """Hooks that carry traces through RabbitMQ, for the engine's process and each worker's.

        hooks = trace_workers()
        Worker(url, topic="compute", tasks=[...], tracing=hooks)    # worker process
        RemoteExecutor(url, topics=["compute"], tracing=hooks)      # engine process

    Requests a `RemoteExecutor` sends then carry the W3C trace context of
    their atom span in their headers, and a `Worker` runs each request in a
    `zag.remote <atom>` span continuing that trace (a child of the engine's
    atom span, so one trace shows both sides). Nothing is installed globally:
    a worker or executor given no hooks traces nothing.
    """
    return WorkerTracing(trace.get_tracer(_SCOPE, __version__, tracer_provider=tracer_provider))
