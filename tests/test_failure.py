"""`zag.Failure`: capture, JSON round trip, check() and reraise()."""

from __future__ import annotations

import json
import sys

import pytest

import zag_async as zag
from zag_async.errors import RemoteFailure


class CardDeclined(ValueError):
    """A user-defined exception with a non-builtin qualified name."""


QUALNAME = f"{CardDeclined.__module__}.{CardDeclined.__qualname__}"


def charge_card(amount: int) -> None:
    raise CardDeclined("card declined", amount)


def capture(fn: object, *args: object) -> zag.Failure:
    try:
        fn(*args)  # type: ignore[operator]
    except Exception as exc:
        return zag.Failure.from_exception(exc)
    raise AssertionError("expected an exception")


def chained() -> None:
    try:
        charge_card(7)
    except CardDeclined as exc:
        raise RuntimeError("payment step failed") from exc


def test_from_exception_captures_types_with_bases() -> None:
    failure = capture(charge_card, 7)
    assert failure.exception_types == (QUALNAME, "ValueError", "Exception", "BaseException")
    assert failure.exception_type == QUALNAME


def test_from_exception_captures_message_args_and_live_exception() -> None:
    exc = CardDeclined("card declined", 7)
    try:
        raise exc
    except CardDeclined as caught:
        failure = zag.Failure.from_exception(caught)
    assert failure.message == str(exc)
    assert failure.args == ("card declined", 7)
    assert failure.exception is exc
    assert failure.cause is None


def test_from_exception_captures_traceback_text() -> None:
    failure = capture(charge_card, 7)
    assert failure.traceback.startswith("Traceback (most recent call last)")
    assert "charge_card" in failure.traceback
    assert 'raise CardDeclined("card declined", amount)' in failure.traceback
    assert "CardDeclined: " in failure.traceback


def test_cause_chain_from_raise_from() -> None:
    failure = capture(chained)
    assert failure.exception_type == "RuntimeError"
    assert failure.message == "payment step failed"
    assert failure.cause is not None
    assert failure.cause.exception_type == QUALNAME
    assert failure.cause.args == ("card declined", 7)
    assert "charge_card" in failure.cause.traceback
    assert failure.cause.cause is None


def test_raise_from_none_has_no_cause() -> None:
    def hide() -> None:
        try:
            charge_card(1)
        except CardDeclined:
            raise KeyError("k") from None

    assert capture(hide).cause is None


def test_json_round_trip() -> None:
    failure = capture(chained)
    text = failure.to_json()
    json.loads(text)  # plain JSON, readable anywhere
    back = zag.Failure.from_json(text)
    assert back == failure
    assert back.exception is None
    assert back.cause is not None and back.cause.exception is None
    assert back.exception_types == failure.exception_types
    assert back.message == failure.message
    assert back.args == failure.args
    assert back.traceback == failure.traceback
    assert back.cause == failure.cause


def test_dict_round_trip() -> None:
    failure = capture(chained)
    data = failure.to_dict()
    assert json.loads(json.dumps(data)) == data
    back = zag.Failure.from_dict(data)
    assert back == failure
    assert back.exception is None
    assert back.to_dict() == data


def test_from_dict_accepts_a_minimal_record() -> None:
    failure = zag.Failure.from_dict({"exception_types": ["KeyError"], "message": "'k'"})
    assert (failure.args, failure.traceback, failure.cause) == ((), "", None)
    assert failure.check(KeyError) is KeyError


def test_different_failures_are_not_equal() -> None:
    assert capture(charge_card, 1) != capture(charge_card, 2)


def test_check_with_classes() -> None:
    failure = capture(charge_card, 7)
    assert failure.check(KeyError, CardDeclined) is CardDeclined
    assert failure.check(ValueError) is ValueError
    assert failure.check(Exception) is Exception
    assert failure.check(KeyError, TypeError) is None
    assert failure.check() is None


def test_check_with_names() -> None:
    failure = capture(charge_card, 7)
    assert failure.check("ValueError") == "ValueError"
    assert failure.check("KeyError", QUALNAME) == QUALNAME
    assert failure.check("KeyError") is None


def test_check_works_after_round_trip() -> None:
    back = zag.Failure.from_json(capture(charge_card, 7).to_json())
    assert back.check(CardDeclined) is CardDeclined
    assert back.check("ValueError") == "ValueError"
    assert back.check(TypeError) is None


def test_reraise_raises_the_original_object() -> None:
    exc = CardDeclined("declined")
    try:
        raise exc
    except CardDeclined as caught:
        failure = zag.Failure.from_exception(caught)
    with pytest.raises(CardDeclined) as info:
        failure.reraise()
    assert info.value is exc


def test_reraise_after_round_trip_rebuilds_an_imported_type() -> None:
    back = zag.Failure.from_json(capture(charge_card, 7).to_json())
    with pytest.raises(CardDeclined) as info:
        back.reraise()
    # The rebuilt exception carries the stored failure as a RemoteFailure cause.
    cause = info.value.__cause__
    assert isinstance(cause, RemoteFailure)
    assert cause.failure == back
    assert QUALNAME in str(cause)
    assert "card declined" in str(cause)


def test_reraise_of_an_unknown_type_raises_remote_failure() -> None:
    data = capture(charge_card, 7).to_dict()
    data["exception_types"] = ["not_imported_anywhere.Boom", "Exception", "BaseException"]
    back = zag.Failure.from_dict(data)
    with pytest.raises(RemoteFailure) as info:
        back.reraise()
    assert info.value.failure == back
    assert "not_imported_anywhere" not in sys.modules  # nothing imported on its behalf


def test_non_json_args_become_repr_strings() -> None:
    marker = object()
    exc = ValueError("odd args", marker, {1, 2}, b"raw", {"k": marker}, (1, "x"))
    failure = zag.Failure.from_exception(exc)
    assert failure.args[0] == "odd args"
    assert failure.args[1] == repr(marker)
    assert failure.args[2] == repr({1, 2})
    assert failure.args[3] == repr(b"raw")
    assert failure.args[4] == {"k": repr(marker)}
    assert list(failure.args[5]) == [1, "x"]
    back = zag.Failure.from_json(failure.to_json())  # serialises without a custom encoder
    assert back == failure


async def test_failure_from_a_flow_is_recorded_on_the_atom() -> None:
    # The engine stores a Failure that still holds the live exception in-process.
    @zag.task
    async def declines() -> None:
        charge_card(3)

    engine = zag.Engine(zag.linear("pay", declines))
    with pytest.raises(CardDeclined) as info:
        await engine.run()
    failure = engine.storage.get("declines").failure
    assert failure is not None
    assert failure.exception is info.value
    assert failure.check(CardDeclined) is CardDeclined
