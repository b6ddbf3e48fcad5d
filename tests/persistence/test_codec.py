"""JsonCodec: the Python types JSON lacks survive a round trip; everything else
is refused with SerializationError when written, never later when read."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import json
import math
import uuid
from typing import Any

import pytest

import zag_async as zag
from zag_async.codec import Codec, JsonCodec
from zag_async.errors import SerializationError, StorageError

codec = JsonCodec()


def round_trip(value: Any) -> Any:
    text = codec.dumps(value)
    assert isinstance(text, str)
    json.loads(text)  # plain JSON underneath, readable by any tool
    return codec.loads(text)


VALUES: dict[str, Any] = {
    "none": None,
    "true": True,
    "int": -(2**80),
    "float": 0.1,
    "str": 'tab\\t, quote ", ünïcode ✓',
    "empty list": [],
    "empty dict": {},
    "tuple": (1, "a", None),
    "empty tuple": (),
    "set": {1, 2, 3},
    "empty set": set(),
    "frozenset": frozenset({"x", "y"}),
    "bytes": bytes(range(256)),
    "empty bytes": b"",
    "naive datetime": datetime.datetime(2024, 2, 29, 23, 59, 59, 999999),
    "aware datetime": datetime.datetime(
        2024, 3, 1, 8, 0, tzinfo=datetime.timezone(datetime.timedelta(hours=5, minutes=30))
    ),
    "date": datetime.date(2000, 1, 1),
    "time": datetime.time(23, 59, 1, 5),
    "aware time": datetime.time(8, 0, tzinfo=datetime.UTC),
    "timedelta": datetime.timedelta(days=-3, seconds=5, microseconds=7),
    "decimal": decimal.Decimal("-1234.5600"),
    "decimal exponent": decimal.Decimal("1E+3"),
    "uuid": uuid.UUID("c9bf9e57-1685-4c89-bafb-ff5af830be8a"),
}


@pytest.mark.parametrize("name", list(VALUES))
def test_round_trip_keeps_value_and_type(name: str) -> None:
    value = VALUES[name]

    got = round_trip(value)

    assert got == value
    assert type(got) is type(value)


def test_datetime_keeps_its_timezone_and_date_stays_a_date() -> None:
    aware = VALUES["aware datetime"]
    got = round_trip(aware)
    assert got.utcoffset() == datetime.timedelta(hours=5, minutes=30)
    assert round_trip(VALUES["naive datetime"]).tzinfo is None
    assert type(round_trip(datetime.date(2024, 1, 2))) is datetime.date


def test_decimal_keeps_its_exact_digits() -> None:
    got = round_trip(decimal.Decimal("0.10"))
    assert str(got) == "0.10"


def test_nested_containers() -> None:
    value = {
        "pairs": [(1, 2), (3, (4, 5))],
        "tags": {("a", 1), ("b", 2)},
        "frozen": frozenset({frozenset({1}), (2, 3)}),
        "deep": {"blob": [b"\x00", {"when": datetime.date(2020, 2, 2)}]},
        "money": (decimal.Decimal("1.5"), uuid.UUID(int=7)),
    }

    got = round_trip(value)

    assert got == value
    assert type(got["pairs"][1][1]) is tuple
    assert type(next(iter(got["tags"]))) is tuple
    assert type(got["deep"]["blob"][0]) is bytes
    assert type(got["money"][0]) is decimal.Decimal


def test_floats_beyond_json() -> None:
    assert round_trip(float("inf")) == float("inf")
    assert round_trip(float("-inf")) == float("-inf")
    assert math.isnan(round_trip(float("nan")))


@pytest.mark.parametrize(
    "value",
    [
        {"$zag": "tuple", "v": [1, 2]},
        {"$zag": "bytes", "v": "not base64!"},
        {"$zag": "nonsense"},
        {"$zag": 1, "other": (1, 2)},
        {"$zag": {"$zag": "set", "v": []}},
        {"outer": {"$zag": "dict", "v": [["k", 1]]}},
        [{"$zag": "uuid", "v": "x"}, ({"$zag": "date"},)],
    ],
    ids=[
        "tuple tag",
        "bytes tag",
        "unknown tag",
        "tag with tuple",
        "tag in tag",
        "dict tag",
        "in list",
    ],
)
def test_user_dicts_with_the_tag_key_stay_dicts(value: Any) -> None:
    got = round_trip(value)

    assert got == value
    assert type(got) is type(value)


def test_key_order_is_kept() -> None:
    value = {"z": 1, "a": 2, "$zag": 3, "m": 4}
    assert list(round_trip(value)) == ["z", "a", "$zag", "m"]


class Opaque:
    def __repr__(self) -> str:
        return "<Opaque handle>"


@pytest.mark.parametrize(
    "value",
    [
        Opaque(),
        object(),
        complex(1, 2),
        bytearray(b"x"),
        range(3),
        lambda: None,
        [1, {"deep": (Opaque(),)}],
    ],
    ids=[
        "instance",
        "object",
        "complex",
        "bytearray",
        "range",
        "lambda",
        "nested",
    ],
)
def test_unsupported_types_are_refused(value: Any) -> None:
    with pytest.raises(SerializationError):
        codec.dumps(value)


def test_refusal_names_the_type() -> None:
    with pytest.raises(SerializationError, match="Opaque"):
        codec.dumps({"handle": Opaque()})


@pytest.mark.parametrize("key", [1, 1.5, None, True, ("a", "b"), b"k", uuid.UUID(int=1)])
def test_non_string_dict_keys_keep_their_type(key: Any) -> None:
    value = {key: "v", "s": 1}
    got = round_trip(value)
    assert got == value
    assert [type(k) for k in got] == [type(key), str]
    assert round_trip([{"ok": {key: "nested"}}]) == [{"ok": {key: "nested"}}]


def test_unstorable_dict_key_is_refused() -> None:
    with pytest.raises(SerializationError, match="Opaque"):
        codec.dumps({Opaque(): 1})


def test_self_reference_is_refused() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(SerializationError):
        codec.dumps(loop)


def test_serialization_error_is_a_storage_error() -> None:
    assert issubclass(SerializationError, StorageError)
    assert issubclass(SerializationError, zag.ZagError)


def test_json_codec_satisfies_the_codec_protocol() -> None:
    chosen: Codec = JsonCodec()
    assert chosen.loads(chosen.dumps({"a": (1,)})) == {"a": (1,)}


class StrictCodec:
    """A stand-in codec: plain JSON (no tags), and it refuses the string "forbidden"."""

    def dumps(self, value: Any) -> str:
        if isinstance(value, str) and "forbidden" in value:
            raise SerializationError("forbidden value")
        return json.dumps(value)

    def loads(self, text: str) -> Any:
        return json.loads(text)


async def test_a_backend_uses_the_codec_it_is_given() -> None:
    async with zag.connect("memory://", codec=StrictCodec()) as backend:
        assert isinstance(backend.codec, StrictCodec)
        detail = zag.FlowDetail("f")
        detail.atoms["a"] = zag.AtomDetail("a", result=[1, 2])
        await backend.save(detail, list(detail.atoms.values()))
        assert (await backend.load_flow(detail.uuid)).atoms["a"].result == [1, 2]

        detail.atoms["a"].result = "forbidden"
        with pytest.raises(SerializationError, match="'a'"):
            await backend.save(detail, [detail.atoms["a"]])


# -- classes: named by module:qualname, loaded only as what they were stored as ---------


@dataclasses.dataclass
class Versioned:
    name: str
    added_later: int = 0


class Tint(enum.Enum):
    RED = "red"


def _tagged(kind: str, name: str, value: Any) -> str:
    return json.dumps({"$zag": kind, "t": name, "v": value})


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        ("dataclass", "os:system"),
        ("dataclass", "builtins:dict"),
        ("enum", f"{__name__}:Versioned"),
        ("model", f"{__name__}:Versioned"),
        ("namedtuple", "builtins:tuple"),
        ("dataclass", f"{__name__}:not_there"),
    ],
)
def test_a_tag_naming_anything_but_its_kind_of_class_is_refused(kind: str, name: str) -> None:
    with pytest.raises(SerializationError, match="refusing"):
        codec.loads(_tagged(kind, name, {}))


@pytest.mark.parametrize("name", ["no_such_module_zag:Thing", "nocolon", ":Thing"])
def test_a_tag_naming_no_importable_class_is_refused(name: str) -> None:
    with pytest.raises(SerializationError):
        codec.loads(_tagged("dataclass", name, {}))


def test_a_stored_dataclass_loads_into_the_class_as_it_is_now() -> None:
    # Written by an older version: a field since removed, one since added (with a default).
    text = _tagged("dataclass", f"{__name__}:Versioned", {"name": "a", "removed": 1})

    assert codec.loads(text) == Versioned("a", 0)


def test_a_stored_enum_value_that_no_longer_exists_is_refused_on_load() -> None:
    with pytest.raises(SerializationError, match="gone"):
        codec.loads(_tagged("enum", f"{__name__}:Tint", "gone"))


def test_a_class_that_its_name_does_not_lead_back_to_is_refused() -> None:
    Shadow = dataclasses.make_dataclass("Shadow", [("x", int)])
    Shadow.__module__ = __name__  # no module attribute Shadow: it could not be loaded back

    with pytest.raises(SerializationError, match="does not lead back"):
        codec.dumps(Shadow(1))
