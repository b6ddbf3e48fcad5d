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

Decoding is bounded and total: a message larger than `MAX_MESSAGE_BYTES`,
nested deeper than `MAX_DEPTH`, or with any field of the wrong type or shape
(a failure record included) raises `MessageError` with the reason, and
nothing else, so whoever reads a message can always settle it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..atom import Atom, FunctionTask
from ..codec import Codec, JsonCodec
from ..errors import ExecutionError, RemoteFailure, SerializationError
from ..failure import Failure

__all__ = [
    "MAX_DEPTH",
    "MAX_MESSAGE_BYTES",
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
#: Largest message read (bytes); a bigger one is refused unread.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
#: Deepest nesting of lists and objects read, in a message and in the values
#: it carries (the JSON decoder would otherwise recurse until RecursionError).
MAX_DEPTH = 200
#: Longest chain of causes a failure record may carry.
MAX_CAUSES = 20


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
    data = _bounded(json.loads, text, "arguments")
    if not isinstance(data, dict):
        raise MessageError("arguments are not a JSON object")
    values = data.get("values")
    if not isinstance(values, str):
        raise MessageError("arguments: field 'values' missing or not str")
    args = _bounded(codec.loads, values, "argument values")
    if not isinstance(args, dict) or not all(isinstance(k, str) for k in args):
        raise MessageError("argument values are not an object of names")
    failures = data.get("failures") or {}
    if not isinstance(failures, dict):
        raise MessageError("arguments: field 'failures' is not an object")
    if "result" in failures:
        args["result"] = _failure(failures["result"], "failures.result")
    if "flow_failures" in failures:
        flow_failures = failures["flow_failures"]
        if not isinstance(flow_failures, dict):
            raise MessageError("arguments: field 'failures.flow_failures' is not an object")
        args["flow_failures"] = {
            k: _failure(f, f"failures.flow_failures.{k}") for k, f in flow_failures.items()
        }
    return args


def _bounded(decode: Callable[[str], Any], text: str, what: str) -> Any:
    """`decode(text)` (JSON or the codec), any error or excess depth as MessageError."""
    try:
        value = decode(text)
    except RecursionError:
        raise MessageError(f"{what} nested deeper than {MAX_DEPTH} levels") from None
    except MessageError:
        raise
    except Exception as exc:  # a codec may raise anything on hostile input
        raise MessageError(f"{what} cannot be decoded: {exc!r}") from exc
    _check_depth(value, what)
    return value


def _check_depth(value: Any, what: str) -> None:
    """MessageError when lists and dicts in `value` nest deeper than MAX_DEPTH."""
    level = [value]
    for _ in range(MAX_DEPTH + 1):
        deeper: list[Any] = []
        for item in level:
            if isinstance(item, dict):
                deeper.extend(item.values())
            elif isinstance(item, (list, tuple)):
                deeper.extend(item)
        if not deeper:
            return
        level = deeper
    raise MessageError(f"{what} nested deeper than {MAX_DEPTH} levels")


def _failure(data: Any, where: str) -> Failure:
    """A failure record, checked field by field (Failure.from_dict trusts its input)."""
    record: Any = data
    chain: list[Any] = []
    while record is not None:
        if len(chain) >= MAX_CAUSES:
            raise MessageError(f"{where}: more than {MAX_CAUSES} causes")
        if not isinstance(record, dict):
            raise MessageError(f"{where}: a failure record must be an object")
        types = record.get("exception_types")
        if not isinstance(types, list) or not types or not all(isinstance(t, str) for t in types):
            raise MessageError(f"{where}: 'exception_types' must list type names (strings)")
        if not isinstance(record.get("message"), str):
            raise MessageError(f"{where}: 'message' missing or not str")
        if not isinstance(record.get("args", []), list):
            raise MessageError(f"{where}: 'args' must be a list")
        if not isinstance(record.get("traceback", ""), str):
            raise MessageError(f"{where}: 'traceback' must be str")
        chain.append(record)
        record = record.get("cause") or None
        where = f"{where}.cause"
    try:
        return Failure.from_dict(data)
    except Exception as exc:  # checked above; kept total all the same
        raise MessageError(f"{where}: malformed failure: {exc!r}") from exc


def _number(data: Mapping[str, Any], key: str) -> float | None:
    """A finite, non-negative number or None (bool is not a number here)."""
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MessageError(f"field {key!r} must be a number or null")
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise MessageError(f"field {key!r} must be finite and >= 0, got {value!r}")
    return number


def _text(data: Mapping[str, Any], key: str) -> str:
    """An optional string field ('' when absent)."""
    value = data.get(key, "")
    if not isinstance(value, str):
        raise MessageError(f"field {key!r} must be str")
    return value


def _require(data: Mapping[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = data.get(key)
    if not isinstance(value, kind):
        raise MessageError(f"field {key!r} missing or not {getattr(kind, '__name__', kind)}")
    return value


def _load(body: bytes) -> dict[str, Any]:
    if len(body) > MAX_MESSAGE_BYTES:
        raise MessageError(f"{len(body)} bytes, more than the {MAX_MESSAGE_BYTES} read")
    try:
        data = json.loads(body)
    except RecursionError:
        raise MessageError(f"nested deeper than {MAX_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise MessageError(f"not JSON: {exc}") from exc
    _check_depth(data, "message")
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
        timeout = _number(data, "timeout")
        rid = _require(data, "id", str)
        task = _require(data, "task", str)
        atom, flow = _text(data, "atom"), _text(data, "flow")
        args = _decode_args(codec or JsonCodec(), _require(data, "args", str))
        return cls(
            id=rid, task=task, action=action, args=args, atom=atom, flow=flow, timeout=timeout
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
        rid = _require(data, "id", str)
        result = None
        if kind == "result":
            result = _bounded((codec or JsonCodec()).loads, _require(data, "result", str), "result")
        failure = data.get("failure")
        if kind == "failure" and failure is None:
            raise MessageError("a failure response needs a 'failure' object")
        parsed = None if failure is None else _failure(failure, "failure")
        reason = data.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise MessageError("field 'reason' must be str")
        details = data.get("details", {})
        if not isinstance(details, dict):
            raise MessageError("field 'details' must be an object")
        return cls(
            id=rid,
            kind=kind,
            worker=_text(data, "worker"),
            result=result,
            failure=parsed,
            progress=_number(data, "progress"),
            reason=reason,
            details=dict(details),
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
    if isinstance(ttl, bool) or not 0 < ttl < math.inf:
        raise MessageError(f"field 'ttl' must be a positive number, got {ttl!r}")
    return Announcement(worker, topic, frozenset(tasks), float(ttl))
