"""The messages engines and remote workers exchange (versioned JSON).

Every message kind is defined and validated here, so a malformed one is
refused with a reason wherever it arrives (`MessageError`):

- `Request` (engine -> topic queue): names a task by its *task key*
  (`module:qualname` of the task's function or class), the action (execute
  or revert) and the arguments the engine resolved for it.
- `Response` (worker -> the request's reply queue), same request id:
  `heartbeat` and `progress` while it runs (`started` is accepted but our
  workers do not send it: a short task answers with its outcome alone), then
  exactly one of `result`, `failure` or `rejected`.
- `Announcement` and `Ping` (discovery fanout): a worker says which tasks it
  serves on which topic, for how long, or that it is leaving; an engine asks
  every worker to announce itself now. `load_discovery` reads either.

Values go through the codec; failures travel as `Failure.to_dict()`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..atom import Atom, FunctionTask
from ..codec import Codec, JsonCodec
from ..errors import ExecutionError, RemoteFailure, SerializationError
from ..failure import Failure

__all__ = [
    "PROTOCOL_VERSION",
    "Announcement",
    "MessageError",
    "Ping",
    "Request",
    "Response",
    "load_discovery",
    "task_key",
]

PROTOCOL_VERSION = 1
ACTIONS = ("execute", "revert")
RESPONSE_KINDS = ("started", "heartbeat", "progress", "result", "failure", "rejected")


class MessageError(ValueError):
    """A message that does not follow the protocol (bad JSON, missing fields, wrong version)."""


def task_key(atom: Atom) -> str:
    """How workers and engines name a task: its function's or class's import path."""
    fn = atom.execute_fn if isinstance(atom, FunctionTask) else None
    target: Any = fn if fn is not None else type(atom)
    return f"{target.__module__}:{target.__qualname__}"


def _encode_args(codec: Codec, args: Mapping[str, Any]) -> str:
    plain: dict[str, Any] = {}
    failures: dict[str, Any] = {}
    for key, value in args.items():
        if key == "result" and isinstance(value, Failure):
            failures["result"] = value.to_dict()
        elif key == "flow_failures" and isinstance(value, Mapping):
            failures["flow_failures"] = {k: f.to_dict() for k, f in value.items()}
        else:
            plain[key] = value
    return json.dumps({"values": codec.dumps(plain), "failures": failures})


def _decode_args(codec: Codec, text: str) -> dict[str, Any]:
    data = json.loads(text)
    args: dict[str, Any] = codec.loads(data["values"])
    failures = data.get("failures") or {}
    if "result" in failures:
        args["result"] = Failure.from_dict(failures["result"])
    if "flow_failures" in failures:
        args["flow_failures"] = {
            k: Failure.from_dict(f) for k, f in failures["flow_failures"].items()
        }
    return args


def _require(data: Mapping[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = data.get(key)
    if not isinstance(value, kind):
        raise MessageError(f"field {key!r} missing or not {getattr(kind, '__name__', kind)}")
    return value


def _load(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MessageError(f"not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise MessageError("not a JSON object")
    version = data.get("v")
    if version != PROTOCOL_VERSION:
        raise MessageError(f"protocol version {version!r}, expected {PROTOCOL_VERSION}")
    return data


@dataclass(frozen=True)
class Request:
    """Run one task's execute or revert with these arguments."""

    id: str
    task: str
    action: str
    args: dict[str, Any]
    atom: str = ""
    flow: str = ""
    timeout: float | None = None

    def dumps(self, codec: Codec | None = None) -> bytes:
        try:
            encoded = _encode_args(codec or JsonCodec(), self.args)
        except SerializationError as exc:
            raise SerializationError(
                f"atom {self.atom!r}: arguments cannot be sent: {exc}"
            ) from exc
        return json.dumps(
            {
                "v": PROTOCOL_VERSION,
                "kind": "request",
                "id": self.id,
                "task": self.task,
                "action": self.action,
                "args": encoded,
                "atom": self.atom,
                "flow": self.flow,
                "timeout": self.timeout,
            }
        ).encode()

    @classmethod
    def loads(cls, body: bytes, codec: Codec | None = None) -> Request:
        data = _load(body)
        if data.get("kind") != "request":
            raise MessageError(f"kind {data.get('kind')!r} is not a request")
        action = _require(data, "action", str)
        if action not in ACTIONS:
            raise MessageError(f"unknown action {action!r}")
        timeout = data.get("timeout")
        if timeout is not None and not isinstance(timeout, (int, float)):
            raise MessageError("field 'timeout' must be a number or null")
        try:
            args = _decode_args(codec or JsonCodec(), _require(data, "args", str))
        except (ValueError, KeyError, TypeError, SerializationError) as exc:
            raise MessageError(f"arguments cannot be decoded: {exc}") from exc
        return cls(
            id=_require(data, "id", str),
            task=_require(data, "task", str),
            action=action,
            args=args,
            atom=str(data.get("atom", "")),
            flow=str(data.get("flow", "")),
            timeout=timeout,
        )


@dataclass(frozen=True)
class Response:
    """News about a request, sent by the worker to the request's reply queue."""

    id: str
    kind: str
    worker: str = ""
    result: Any = None
    failure: Failure | None = None
    progress: float | None = None
    reason: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def dumps(self, codec: Codec | None = None) -> bytes:
        body: dict[str, Any] = {"v": PROTOCOL_VERSION, "kind": self.kind, "id": self.id}
        if self.worker:
            body["worker"] = self.worker
        if self.kind == "result":
            body["result"] = (codec or JsonCodec()).dumps(self.result)
        if self.failure is not None:
            body["failure"] = self.failure.to_dict()
        if self.progress is not None:
            body["progress"] = self.progress
        if self.reason is not None:
            body["reason"] = self.reason
        if self.details:
            body["details"] = self.details
        return json.dumps(body).encode()

    @classmethod
    def loads(cls, body: bytes, codec: Codec | None = None) -> Response:
        data = _load(body)
        kind = _require(data, "kind", str)
        if kind not in RESPONSE_KINDS:
            raise MessageError(f"unknown response kind {kind!r}")
        result = None
        if kind == "result":
            try:
                result = (codec or JsonCodec()).loads(_require(data, "result", str))
            except (ValueError, SerializationError) as exc:
                raise MessageError(f"result cannot be decoded: {exc}") from exc
        failure = data.get("failure")
        if kind == "failure" and not isinstance(failure, dict):
            raise MessageError("a failure response needs a 'failure' object")
        if isinstance(failure, dict):
            try:
                parsed: Failure | None = Failure.from_dict(failure)
            except (KeyError, TypeError, ValueError) as exc:
                raise MessageError(f"malformed failure: {exc!r}") from exc
        else:
            parsed = None
        progress = data.get("progress")
        return cls(
            id=_require(data, "id", str),
            kind=kind,
            worker=str(data.get("worker", "")),
            result=result,
            failure=parsed,
            progress=float(progress) if isinstance(progress, (int, float)) else None,
            reason=data.get("reason") if isinstance(data.get("reason"), str) else None,
            details=dict(data["details"]) if isinstance(data.get("details"), dict) else {},
        )

    def outcome(self, atom: str) -> Any:
        """What the engine's call returns: the result, or the error it raises.

        Only for the final kinds (`result`, `failure`, `rejected`).
        """
        if self.kind == "result":
            return self.result
        if self.kind == "rejected":
            raise ExecutionError(
                f"atom {atom!r}: worker {self.worker} rejected the request: {self.reason}"
            )
        if self.failure is None:
            raise ExecutionError(f"atom {atom!r}: a {self.kind!r} response is not an outcome")
        raise RemoteFailure(self.failure)

    @property
    def final(self) -> bool:
        """True for the one response that ends a request."""
        return self.kind in ("result", "failure", "rejected")


@dataclass(frozen=True)
class Announcement:
    """A worker's word on discovery: it serves `tasks` on `topic` for `ttl` s, or leaves."""

    worker: str
    topic: str
    tasks: frozenset[str]
    ttl: float
    leaving: bool = False

    def dumps(self) -> bytes:
        return json.dumps(
            {
                "v": PROTOCOL_VERSION,
                "kind": "leaving" if self.leaving else "worker",
                "worker": self.worker,
                "topic": self.topic,
                "tasks": sorted(self.tasks),
                "ttl": self.ttl,
            }
        ).encode()


@dataclass(frozen=True)
class Ping:
    """An engine asks every worker to announce itself now."""

    def dumps(self) -> bytes:
        return json.dumps({"v": PROTOCOL_VERSION, "kind": "ping"}).encode()


def load_discovery(body: bytes) -> Announcement | Ping:
    """Read a discovery message; MessageError says what is wrong with a malformed one."""
    data = _load(body)
    kind = data.get("kind")
    if kind == "ping":
        return Ping()
    if kind not in ("worker", "leaving"):
        raise MessageError(f"kind {kind!r} is not a discovery message")
    worker = _require(data, "worker", str)
    if not worker:
        raise MessageError("field 'worker' is empty")
    if kind == "leaving":
        topic = data.get("topic")
        return Announcement(worker, topic if isinstance(topic, str) else "", frozenset(), 0.0, True)
    topic = _require(data, "topic", str)
    tasks = _require(data, "tasks", list)
    if not all(isinstance(t, str) for t in tasks):
        raise MessageError("field 'tasks' must list task keys (strings)")
    ttl = _require(data, "ttl", (int, float))
    if isinstance(ttl, bool) or not ttl > 0:
        raise MessageError(f"field 'ttl' must be a positive number, got {ttl!r}")
    return Announcement(worker, topic, frozenset(tasks), float(ttl))
