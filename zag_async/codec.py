"""How results and other user values become text for storage and the wire, and back.

One codec serves every backend (`memory://` included, and an engine with no
backend checks its results with it too) and the remote-worker protocol, so a
flow that runs in a test runs the same on a database and on workers.

`JsonCodec` (the default) writes JSON. The Python types JSON lacks come back
as themselves because they are tagged `{"$zag": kind, ...}`: tuple, set,
frozenset, bytes, datetime, date, time, timedelta, Decimal, UUID, and the
user's own dataclasses, Enums (IntEnum and StrEnum too), named tuples and
pydantic v2 models, which are named by `module:qualname`. Loading imports
that module if needed and builds only those kinds of class: a tag naming
anything else is refused, so stored text cannot make the loader call an
arbitrary function. Anything else raises `SerializationError` when written,
saying how to make it storable. Any object with `dumps(value) -> str` and
`loads(text) -> value` can replace the codec (`zag.connect(url, codec=...)`,
`Worker(codec=...)`, `RemoteExecutor(codec=...)`).

`plain_json` is the lossy form for documents that are read, not loaded back
(job outcomes, flow status over HTTP).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import decimal
import enum
import importlib
import json
import sys
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from .errors import SerializationError

__all__ = ["Codec", "JsonCodec"]

_TAG = "$zag"

#: What to do about a value the codec cannot store (the end of every refusal).
_HOW_TO_STORE = (
    "to store it, use JSON types (dict, list, str, int, float, bool, None), tuple, set, "
    "bytes, datetime/date/time/timedelta, Decimal, UUID, or a module-level dataclass, Enum, "
    "NamedTuple or pydantic model of them; or plug in your own codec: codec= on zag.connect(), "
    "Worker or RemoteExecutor, an object with dumps(value) -> str and loads(text) -> value"
)


class Codec(Protocol):
    """Turns values into text and back (`JsonCodec` unless one is given)."""

    def dumps(self, value: Any) -> str: ...

    def loads(self, text: str) -> Any: ...


# -- naming classes ------------------------------------------------------------------

_NAMES: dict[type, str] = {}  # classes already checked to load back under their name
_CLASSES: dict[tuple[str, str], type] = {}  # (kind, name) -> class, once loaded and checked


def _type_name(cls: type) -> str:
    """`module:qualname` of a class that loading can find again, else SerializationError."""
    name = _NAMES.get(cls)
    if name is not None:
        return name
    name = f"{cls.__module__}:{cls.__qualname__}"
    if "<locals>" in cls.__qualname__:
        raise SerializationError(
            f"a {name} cannot be stored: it is defined inside a function, so it could not be "
            f"found again when loaded; define it at module level"
        )
    if _find(cls.__module__, cls.__qualname__) is not cls:
        raise SerializationError(
            f"a {name} cannot be stored: that name does not lead back to its class "
            f"(made dynamically, or redefined?); define it once at module level"
        )
    _NAMES[cls] = name
    return name


def _find(module: str, qualname: str) -> Any:
    found: Any = sys.modules.get(module)
    for part in qualname.split("."):
        found = getattr(found, part, None)
    return found


def _is_model_class(cls: type) -> bool:
    pydantic = sys.modules.get("pydantic")  # no model exists unless pydantic was imported
    return pydantic is not None and issubclass(cls, pydantic.BaseModel)


def _is_named_tuple_class(cls: type) -> bool:
    return issubclass(cls, tuple) and isinstance(getattr(cls, "_fields", None), tuple)


_KINDS: dict[str, Callable[[type], bool]] = {
    "dataclass": dataclasses.is_dataclass,
    "enum": lambda cls: issubclass(cls, enum.Enum),
    "model": _is_model_class,
    "namedtuple": _is_named_tuple_class,
}


def _load_class(kind: str, name: str) -> Any:
    """The class a tag names, imported if need be and checked to be of `kind`."""
    cls = _CLASSES.get((kind, name))
    if cls is not None:
        return cls
    module, _, qualname = name.partition(":")
    if not module or not qualname:
        raise SerializationError(f"stored {kind} names {name!r}, not module:qualname")
    if module not in sys.modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise SerializationError(
                f"stored value is a {name}, but module {module!r} cannot be imported here: {exc}"
            ) from exc
    found = _find(module, qualname)
    if not (isinstance(found, type) and _KINDS[kind](found)):
        raise SerializationError(
            f"stored value names {name} as a {kind}, but it is {found!r}: refusing to load it"
        )
    _CLASSES[(kind, name)] = found
    return found


# -- writing -------------------------------------------------------------------------

_SCALARS = frozenset({str, int, float, bool, type(None)})


def _encode(value: Any) -> Any:
    cls = type(value)
    if cls in _SCALARS:
        return value
    if cls is list:
        return [_encode(v) for v in value]
    if cls is dict:
        return _encode_dict(value)
    return _encode_other(value)


def _encode_dict(value: Mapping[Any, Any]) -> Any:
    out: dict[str, Any] = {}
    for k, v in value.items():
        if not isinstance(k, str):  # other keys (int, tuple, UUID...) keep their type as pairs
            return {_TAG: "dict", "v": [[_encode(k), _encode(v)] for k, v in value.items()]}
        out[k] = _encode(v)
    if _TAG in out:  # a user dict that looks like a tag: store it as pairs
        return {_TAG: "dict", "v": [[k, v] for k, v in out.items()]}
    return out


def _encode_other(value: Any) -> Any:
    """Everything but exact JSON scalars, lists and dicts (the fast path), by its class."""
    cls = type(value)
    encode = _ENCODERS.get(cls)
    if encode is None:
        encode = _encoder_for(cls, value)
        _ENCODERS[cls] = encode
    return encode(value)


Encoder = Callable[[Any], Any]
_ENCODERS: dict[type, Encoder] = {}  # by class, learnt on first sight


def _encoder_for(cls: type, value: Any) -> Encoder:
    """How values of `cls` are written; SerializationError if they cannot be."""
    if issubclass(cls, enum.Enum):
        name = _type_name(cls)
        return lambda v: {_TAG: "enum", "t": name, "v": _encode(v.value)}
    if issubclass(cls, (str, int, float)):  # subclasses (numpy scalars...): as the base type
        return lambda v: v
    if issubclass(cls, list):
        return lambda v: [_encode(x) for x in v]
    if issubclass(cls, dict):
        return _encode_dict
    if _is_named_tuple_class(cls):
        name = _type_name(cls)
        return lambda v: {_TAG: "namedtuple", "t": name, "v": [_encode(x) for x in v]}
    if issubclass(cls, tuple):
        return lambda v: {_TAG: "tuple", "v": [_encode(x) for x in v]}
    if issubclass(cls, (set, frozenset)):
        kind = "set" if issubclass(cls, set) else "frozenset"
        return lambda v: {_TAG: kind, "v": [_encode(x) for x in v]}
    if issubclass(cls, bytes):
        return lambda v: {_TAG: "bytes", "v": base64.b64encode(v).decode("ascii")}
    for kind, base in _AS_TEXT:  # datetime before date: a datetime is a date
        if issubclass(cls, base):
            return _as_text(kind)
    if issubclass(cls, datetime.timedelta):
        return lambda v: {_TAG: "timedelta", "v": [v.days, v.seconds, v.microseconds]}
    if issubclass(cls, (decimal.Decimal, uuid.UUID)):
        kind = "decimal" if issubclass(cls, decimal.Decimal) else "uuid"
        return lambda v: {_TAG: kind, "v": str(v)}
    if dataclasses.is_dataclass(cls):
        name = _type_name(cls)
        names = tuple(f.name for f in dataclasses.fields(cls))
        return lambda v: {
            _TAG: "dataclass",
            "t": name,
            "v": {n: _encode(getattr(v, n)) for n in names},
        }
    if _is_model_class(cls):
        return _model_encoder(_type_name(cls))
    raise SerializationError(
        f"a {cls.__module__}.{cls.__qualname__} cannot be stored ({value!r:.80}): {_HOW_TO_STORE}"
    )


_AS_TEXT = (
    ("datetime", datetime.datetime),
    ("date", datetime.date),
    ("time", datetime.time),
)


def _as_text(kind: str) -> Encoder:
    return lambda v: {_TAG: kind, "v": v.isoformat()}


def _model_encoder(name: str) -> Encoder:
    def encode(value: Any) -> Any:
        try:
            dumped = value.model_dump(mode="json")
        except Exception as exc:  # pydantic's own serialization errors
            raise SerializationError(f"a {name} cannot be stored: {exc}") from exc
        return {_TAG: "model", "t": name, "v": _encode(dumped)}

    return encode


# -- reading -------------------------------------------------------------------------


def _dataclass(cls: Any, fields: dict[str, Any]) -> Any:
    """Build through `__init__` (defaults fill fields added since the value was
    stored), then set the fields `__init__` does not take."""
    declared = {f.name: f for f in dataclasses.fields(cls)}
    init = {k: v for k, v in fields.items() if k in declared and declared[k].init}
    try:
        obj = cls(**init)
    except TypeError as exc:
        raise SerializationError(f"stored {cls.__qualname__} cannot be built again: {exc}") from exc
    for k, v in fields.items():
        if k in declared and not declared[k].init:
            object.__setattr__(obj, k, v)
    return obj


def _decode_tag(obj: dict[str, Any]) -> Any:
    kind = obj.get(_TAG)
    if kind is None:
        return obj
    v = obj["v"]
    if kind == "tuple":
        return tuple(v)
    if kind == "set":
        return set(v)
    if kind == "frozenset":
        return frozenset(v)
    if kind == "bytes":
        return base64.b64decode(v)
    if kind == "datetime":
        return datetime.datetime.fromisoformat(v)
    if kind == "date":
        return datetime.date.fromisoformat(v)
    if kind == "time":
        return datetime.time.fromisoformat(v)
    if kind == "timedelta":
        return datetime.timedelta(days=v[0], seconds=v[1], microseconds=v[2])
    if kind == "decimal":
        return decimal.Decimal(v)
    if kind == "uuid":
        return uuid.UUID(v)
    if kind == "dict":
        return dict(v)
    if kind in _KINDS:
        cls = _load_class(kind, obj["t"])
        if kind == "dataclass":
            return _dataclass(cls, v)
        if kind == "enum":
            return cls(v)
        if kind == "namedtuple":
            return cls(*v)
        return cls.model_validate(v)
    raise SerializationError(f"unknown stored type tag {kind!r}")


class JsonCodec:
    """JSON with tags for the Python types JSON lacks (see the module docstring)."""

    def dumps(self, value: Any) -> str:
        try:
            return json.dumps(_encode(value), separators=(",", ":"), allow_nan=True)
        except SerializationError:
            raise
        except (TypeError, ValueError, RecursionError) as exc:
            raise SerializationError(f"value cannot be stored as JSON: {exc}") from exc

    def check(self, value: Any) -> None:
        """Raise SerializationError if `dumps(value)` would, without writing the text."""
        if type(value) in _SCALARS:
            return
        try:
            _encode(value)
        except RecursionError as exc:
            raise SerializationError(f"value cannot be stored as JSON: {exc}") from exc

    def loads(self, text: str) -> Any:
        try:
            return json.loads(text, object_hook=_decode_tag)
        except SerializationError:
            raise
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            raise SerializationError(f"stored value cannot be loaded: {exc!r}") from exc


def plain_json(values: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """`values` ready for a JSON document: each as it is if JSON can hold it, else its repr.

    Lossy on purpose: for records read by people and other programs (a job's
    outcome, a flow's status over HTTP), never loaded back as results.
    """
    if values is None:
        return None
    out: dict[str, Any] = {}
    for key, value in values.items():
        try:
            json.dumps(value)
            out[key] = value
        except (TypeError, ValueError):
            out[key] = repr(value)
    return out
