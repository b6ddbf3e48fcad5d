"""The messages engines and remote workers exchange (versioned JSON).

A request names a task by its *task key* (`module:qualname` of the task's
function or class), the action (execute or revert) and the arguments the
engine resolved for it. Responses carry the same request id: `heartbeat` and
`progress` while it runs (`started` is accepted but our workers do not send
it: a short task answers with its outcome alone), then exactly one of
`result`, `failure` or `rejected`. Values go through the codec; failures travel as
`Failure.to_dict()`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..atom import Atom, FunctionTask
from ..codec import Codec, JsonCodec
from ..errors import SerializationError
from ..failure import Failure

__all__ = ["PROTOCOL_VERSION", "Request", "Response", "task_key"]

PROTOCOL_VERSION = 1
ACTIONS = ("execute", "revert")
RESPONSE_KINDS = ("started", "heartbeat", "progress", "result", "failure", "rejected")


class MessageError(ValueError):
    """A message that does not follow the protocol (bad JSON, missing fields, wrong version)."""


def task_key(atom: Atom) -> str:
    """How workers and engines name a task: its function's or class's import path."""
    target: Any = atom._execute_callable() if isinstance(atom, FunctionTask) else type(atom)
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
