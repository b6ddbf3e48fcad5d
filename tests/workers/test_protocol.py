"""The wire format between engines and workers: versioned JSON, validated on the way in.

No broker needed: these are pure encode/decode checks.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

import zag_async as zag
from zag_async.errors import SerializationError
from zag_async.workers import PROTOCOL_VERSION, Request, Response, task_key
from zag_async.workers.protocol import Announcement, MessageError, Ping, load_discovery

from . import tasks


def boom_failure(message: str = "it broke") -> zag.Failure:
    try:
        try:
            raise KeyError("inner")
        except KeyError as inner:
            raise tasks.Kaboom(message) from inner
    except tasks.Kaboom as exc:
        return zag.Failure.from_exception(exc)


def request(**overrides: Any) -> Request:
    fields: dict[str, Any] = {
        "id": "r-1",
        "task": f"{tasks.__name__}:add",
        "action": "execute",
        "args": {"x": 1, "y": [1, 2, {"z": None}]},
        "atom": "add",
        "flow": "numbers",
        "timeout": 2.5,
    }
    fields.update(overrides)
    return Request(**fields)


def request_body(**overrides: Any) -> dict[str, Any]:
    """A valid request as a dict, with some fields replaced (or removed with ...)."""
    body = json.loads(request().dumps())
    for key, value in overrides.items():
        if value is ...:
            del body[key]
        else:
            body[key] = value
    return body


def encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()


# -- round trips ------------------------------------------------------------------


def test_task_key_is_module_and_qualname() -> None:
    assert task_key(tasks.add) == f"{tasks.__name__}:add"
    assert task_key(tasks.Describe()) == f"{tasks.__name__}:Describe"
    # A variant keeps the key: the worker runs the same code.
    assert task_key(tasks.add.bind(name="other", rebind={"x": "a"})) == task_key(tasks.add)


def test_request_round_trip() -> None:
    original = request()
    body = original.dumps()
    data = json.loads(body)
    assert data["v"] == PROTOCOL_VERSION
    assert data["kind"] == "request"
    assert Request.loads(body) == original


def test_request_without_timeout_round_trips() -> None:
    original = request(timeout=None, action="revert", args={})
    assert Request.loads(original.dumps()) == original


@pytest.mark.parametrize(
    "response",
    [
        Response("r-1", "started", "w1"),
        Response("r-1", "heartbeat", "w1"),
        Response("r-1", "progress", "w1", progress=0.5),
        Response("r-1", "result", "w1", result={"a": [1, 2], "b": "x"}),
        Response("r-1", "result", "w1", result=None),
        Response("r-1", "rejected", "w1", reason="no such task"),
        Response("r-1", "started", "w1", details={"host": "h"}),
    ],
    ids=lambda r: r.kind,
)
def test_response_round_trip(response: Response) -> None:
    assert Response.loads(response.dumps()) == response


def test_failure_response_round_trips_the_failure() -> None:
    failure = boom_failure()
    back = Response.loads(Response("r-1", "failure", "w1", failure=failure).dumps())
    assert back.kind == "failure"
    assert back.failure == failure
    assert back.failure is not None
    assert back.failure.exception is None  # no live exception after the trip
    assert back.failure.check(tasks.Kaboom) and back.failure.check(ValueError)
    assert back.failure.message == "it broke"
    assert "raise tasks.Kaboom(message)" in back.failure.traceback
    assert back.failure.cause is not None and back.failure.cause.check(KeyError)


def test_revert_request_carries_result_failure_and_flow_failures() -> None:
    own, other = boom_failure("own"), boom_failure("other")
    original = request(
        action="revert",
        args={"tag": "c", "result": own, "flow_failures": {"c": own, "d": other}},
    )
    back = Request.loads(original.dumps())
    assert back.args["tag"] == "c"
    result = back.args["result"]
    assert isinstance(result, zag.Failure) and result == own
    assert result.check(tasks.Kaboom)
    failures = back.args["flow_failures"]
    assert set(failures) == {"c", "d"}
    assert failures["d"] == other and failures["d"].message == "other"
    assert all(isinstance(f, zag.Failure) for f in failures.values())


def test_revert_request_with_a_plain_result_and_no_failures() -> None:
    original = request(action="revert", args={"result": {"total": 3}, "flow_failures": {}})
    back = Request.loads(original.dumps())
    assert back.args == {"result": {"total": 3}, "flow_failures": {}}


def test_unsendable_argument_raises_serialization_error_naming_the_atom() -> None:
    with pytest.raises(SerializationError, match="'add'") as caught:
        request(args={"x": object(), "y": 1}).dumps()
    assert "atom" in str(caught.value)


# -- rejected messages --------------------------------------------------------------


@pytest.mark.parametrize("version", [PROTOCOL_VERSION + 1, 0, "1", None])
def test_version_mismatch_is_rejected(version: Any) -> None:
    with pytest.raises(MessageError, match="version"):
        Request.loads(encode(request_body(v=version)))
    with pytest.raises(MessageError, match="version"):
        Response.loads(encode({"v": version, "kind": "started", "id": "r-1"}))


def test_missing_version_is_rejected() -> None:
    with pytest.raises(MessageError, match="version"):
        Request.loads(encode(request_body(v=...)))


@pytest.mark.parametrize(
    "body",
    [b"", b"{not json", b"\xff\xfe\x00", b"[1, 2]", b'"a string"', b"null"],
    ids=["empty", "bad-json", "not-utf8", "array", "string", "null"],
)
def test_malformed_json_is_rejected(body: bytes) -> None:
    with pytest.raises(MessageError):
        Request.loads(body)
    with pytest.raises(MessageError):
        Response.loads(body)


def test_message_error_is_a_value_error() -> None:
    assert issubclass(MessageError, ValueError)


@pytest.mark.parametrize("missing", ["id", "task", "action", "args", "kind"])
def test_request_missing_field_is_rejected(missing: str) -> None:
    with pytest.raises(MessageError) as caught:
        Request.loads(encode(request_body(**{missing: ...})))
    if missing != "kind":
        assert repr(missing) in str(caught.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("id", 17),
        ("task", None),
        ("action", "explode"),
        ("kind", "result"),
        ("timeout", "soon"),
        ("args", "{not json"),
        ("args", json.dumps({"failures": {}})),  # no "values"
        ("args", 3),
        ("args", json.dumps({"values": "{}", "failures": {"result": {}}})),
    ],
)
def test_request_bad_field_is_rejected(field: str, value: Any) -> None:
    with pytest.raises(MessageError):
        Request.loads(encode(request_body(**{field: value})))


@pytest.mark.parametrize(
    "body",
    [
        {"v": PROTOCOL_VERSION, "kind": "started"},  # no id
        {"v": PROTOCOL_VERSION, "id": "r-1"},  # no kind
        {"v": PROTOCOL_VERSION, "kind": "done", "id": "r-1"},  # unknown kind
        {"v": PROTOCOL_VERSION, "kind": "result", "id": "r-1"},  # no result
        {"v": PROTOCOL_VERSION, "kind": "failure", "id": "r-1"},  # no failure
        {"v": PROTOCOL_VERSION, "kind": "failure", "id": "r-1", "failure": "oops"},
        {"v": PROTOCOL_VERSION, "kind": "failure", "id": "r-1", "failure": {}},
        {"v": PROTOCOL_VERSION, "kind": "result", "id": "r-1", "result": "{not json"},
    ],
    ids=[
        "no-id",
        "no-kind",
        "unknown-kind",
        "result-missing",
        "failure-missing",
        "failure-str",
        "failure-empty",
        "result-bad",
    ],
)
def test_response_missing_or_bad_field_is_rejected(body: dict[str, Any]) -> None:
    with pytest.raises(MessageError):
        Response.loads(encode(body))


# -- discovery ------------------------------------------------------------------------------


def test_announcement_round_trips_in_the_wire_format() -> None:
    word = Announcement("w1", "compute", frozenset({"m:b", "m:a"}), 6.0)
    body = json.loads(word.dumps())
    assert body == {
        "v": PROTOCOL_VERSION,
        "kind": "worker",
        "worker": "w1",
        "topic": "compute",
        "tasks": ["m:a", "m:b"],
        "ttl": 6.0,
    }
    assert load_discovery(word.dumps()) == word


def test_leaving_and_ping_round_trip() -> None:
    leaving = Announcement("w1", "compute", frozenset({"m:a"}), 6.0, leaving=True)
    back = load_discovery(leaving.dumps())
    assert isinstance(back, Announcement) and back.leaving and back.worker == "w1"
    assert json.loads(Ping().dumps()) == {"v": PROTOCOL_VERSION, "kind": "ping"}
    assert load_discovery(Ping().dumps()) == Ping()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "not JSON"),
        ({"v": 99, "kind": "ping"}, "protocol version"),
        ({"v": PROTOCOL_VERSION, "kind": "request"}, "not a discovery message"),
        ({"v": PROTOCOL_VERSION, "kind": "worker", "topic": "t", "tasks": [], "ttl": 1}, "worker"),
        ({"v": PROTOCOL_VERSION, "kind": "worker", "worker": "", "topic": "t"}, "empty"),
        ({"v": PROTOCOL_VERSION, "kind": "worker", "worker": "w", "tasks": [], "ttl": 1}, "topic"),
        (
            {"v": PROTOCOL_VERSION, "kind": "worker", "worker": "w", "topic": "t", "tasks": "a"},
            "tasks",
        ),
        (
            {"v": PROTOCOL_VERSION, "kind": "worker", "worker": "w", "topic": "t", "tasks": [1]},
            "task keys",
        ),
        (
            {"v": PROTOCOL_VERSION, "kind": "worker", "worker": "w", "topic": "t", "tasks": []},
            "ttl",
        ),
        (
            {
                "v": PROTOCOL_VERSION,
                "kind": "worker",
                "worker": "w",
                "topic": "t",
                "tasks": [],
                "ttl": 0,
            },
            "positive",
        ),  # fmt: skip
        ({"v": PROTOCOL_VERSION, "kind": "leaving"}, "worker"),
    ],
    ids=[
        "not-json",
        "version",
        "kind",
        "no-worker",
        "empty-worker",
        "no-topic",
        "tasks-not-list",
        "tasks-not-keys",
        "no-ttl",
        "ttl-zero",
        "leaving-anonymous",
    ],
)
def test_malformed_discovery_message_is_rejected_with_its_reason(
    body: bytes | dict[str, Any], reason: str
) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(MessageError, match=reason):
        load_discovery(raw)


def test_final_responses_give_the_outcome_or_raise() -> None:
    assert Response("r", "result", "w", result=3).outcome("a") == 3
    with pytest.raises(zag.errors.ExecutionError, match="rejected the request: nope"):
        Response("r", "rejected", "w", reason="nope").outcome("a")
    with pytest.raises(zag.errors.RemoteFailure):
        Response("r", "failure", "w", failure=boom_failure()).outcome("a")
    assert not Response("r", "heartbeat", "w").final
