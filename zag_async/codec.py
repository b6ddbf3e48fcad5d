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

`as_declared` is the other way in: plain JSON that reached the store without
the codec (a web hook, the CLI, a schedule's store) is made the type a task's
parameter declares when the task is called.

`plain_json` is the lossy form for documents that are read, not loaded back
(job outcomes, flow status over HTTP).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import enum
import importlib
import json
import sys
import types
import typing
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from .errors import SerializationError

__all__ = ["Codec", "JsonCodec", "storable_text"]

_TAG = "$zag"


def storable_text(value: object) -> typing.TypeGuard[str]:
    """True for a str every database stores and looks up as given: no NUL (PostgreSQL
    text cannot hold one) and nothing UTF-8 cannot encode (a lone surrogate)."""
    if not isinstance(value, str) or "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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


def _decimal_type() -> type[Any] | None:
    decimal = sys.modules.get("decimal")  # no Decimal exists unless decimal was imported
    return None if decimal is None else decimal.Decimal


def _decimal(text: str) -> Any:
    import decimal  # on first use: most flows store no Decimal

    return decimal.Decimal(text)


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
        except Exception as exc:  # ImportError, or whatever the module raised
            raise SerializationError(
                f"stored value is a {name}, but module {module!r} cannot be imported here: {exc}"
            ) from exc
    found = _find(module, qualname)
    if not (isinstance(found, type) and _KINDS[kind](found)):
        hint = " (a class of a script's __main__ loads only in that script)"
        raise SerializationError(
            f"stored value names {name} as a {kind}, but it is {found!r}: refusing to load it"
            + (hint if module == "__main__" else "")
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


def _check(value: Any) -> None:
    """What `_encode` would refuse, refused without building its output (JSON's own
    types, the common case, are only looked at)."""
    cls = type(value)
    if cls in _SCALARS:
        return
    if cls is list:
        for v in value:
            _check(v)
    elif cls is dict:
        for k, v in value.items():
            if type(k) is not str:
                _encode(k)
            _check(v)
    else:
        _encode_other(value)


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
    decimal_type = _decimal_type()
    if issubclass(cls, uuid.UUID) or (decimal_type is not None and issubclass(cls, decimal_type)):
        kind = "uuid" if issubclass(cls, uuid.UUID) else "decimal"
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
        return _decimal(v)
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


#: One encoder for every write (json.dumps with options builds a new one per call).
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=True)


class JsonCodec:
    """JSON with tags for the Python types JSON lacks (see the module docstring)."""

    def dumps(self, value: Any) -> str:
        cls = type(value)
        if value is None:
            return "null"
        if cls is int:
            return int.__repr__(value)
        try:
            return _ENCODER.encode(_encode(value))
        except SerializationError:
            raise
        except (TypeError, ValueError, RecursionError) as exc:
            raise SerializationError(f"value cannot be stored as JSON: {exc}") from exc

    def check(self, value: Any) -> None:
        """Raise SerializationError if `dumps(value)` would, without writing the text."""
        try:
            _check(value)
        except RecursionError as exc:
            raise SerializationError(f"value cannot be stored as JSON: {exc}") from exc

    def loads(self, text: str) -> Any:
        try:
            return json.loads(text, object_hook=_decode_tag)
        except SerializationError:
            raise
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            raise SerializationError(f"stored value cannot be loaded: {exc!r}") from exc


# -- into the declared types ------------------------------------------------------------

Convert = Callable[[Any], Any]
_CONVERTERS: dict[types.CodeType, tuple[Any, dict[str, Convert]]] = {}
_FIELD_CONVERTERS: dict[type, dict[str, Convert]] = {}


def as_declared(fn: Callable[..., Any], kwargs: dict[str, Any], *, atom: str) -> dict[str, Any]:
    """`kwargs` with each value made the type `fn`'s parameter declares, where it is not yet.

    A stored value comes back as its own type anyway (the codec tags it); this
    is for plain JSON that reached the store another way (a web hook, the CLI's
    `--store`, a schedule's store, a result stored by older code): a dict for a
    parameter annotated with a dataclass or pydantic model, a value for an Enum,
    a list for a tuple, set or NamedTuple, an ISO string for a datetime, date or
    time, a string for a Decimal or UUID, seconds for a timedelta, also inside
    `X | None`, `list[X]`, `tuple[X, ...]`, `set[X]` and `dict[K, X]`. Parameters
    with other annotations (or none) are passed as they are, at no cost.
    """
    convert = _converters(fn)
    if not convert:
        return kwargs
    out = dict(kwargs)
    for name, to_type in convert.items():
        if name in out:
            try:
                out[name] = to_type(out[name])
            except Exception as exc:
                raise SerializationError(
                    f"atom {atom!r}: argument {name!r} (a {type(out[name]).__qualname__}) "
                    f"cannot be made the type its parameter declares: {exc}"
                ) from exc
    return out


def _converters(fn: Callable[..., Any]) -> dict[str, Convert]:
    # By code object, so closures made from one `def` (a factory's tasks) share
    # an entry and the cache cannot outgrow the program's source; checked
    # against the annotations, which closures may evaluate differently.
    code = getattr(fn, "__code__", None)
    if code is None:  # a callable object: work it out each time
        return _learn_converters(fn)
    annotations = getattr(fn, "__annotations__", None)
    cached = _CONVERTERS.get(code)
    if cached is not None and (cached[0] is annotations or cached[0] == annotations):
        return cached[1]
    found = _learn_converters(fn)
    _CONVERTERS[code] = (annotations, found)
    return found


def _learn_converters(fn: Callable[..., Any]) -> dict[str, Convert]:
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # names only importable under TYPE_CHECKING...: leave the values be
        return {}
    hints.pop("return", None)
    found = {name: _converter(hint) for name, hint in hints.items()}
    return {name: c for name, c in found.items() if c is not None}


def _converter(hint: Any) -> Convert | None:
    """How to make a plain value the type `hint` names; None when there is nothing to do."""
    origin = typing.get_origin(hint)
    if origin is typing.Annotated:
        return _converter(typing.get_args(hint)[0])
    if origin is typing.Union or origin is types.UnionType:
        arms = [a for a in typing.get_args(hint) if a is not type(None)]
        inner = _converter(arms[0]) if len(arms) == 1 else None
        return None if inner is None else (lambda v: v if v is None else inner(v))
    if origin in (list, set, frozenset) or (origin is tuple and _homogeneous(hint)):
        args = typing.get_args(hint)
        return _collection(origin, _converter(args[0]) if args else None)
    if origin is dict:
        key_type, value_type = typing.get_args(hint) or (Any, Any)
        keys, values = _converter(key_type) or _same, _converter(value_type) or _same
        if keys is _same and values is _same:
            return None
        return lambda v: {keys(k): values(x) for k, x in v.items()} if type(v) is dict else v
    if origin is not None or not isinstance(hint, type):
        return None
    return _class_converter(hint)


def _same(value: Any) -> Any:
    return value


def _homogeneous(hint: Any) -> bool:
    args = typing.get_args(hint)
    return len(args) == 2 and args[1] is Ellipsis


def _collection(kind: type, items: Convert | None) -> Convert | None:
    if items is None:  # only the container to make: a list for a tuple, set or frozenset
        return None if kind is list else (lambda v: kind(v) if type(v) is list else v)
    many = (list, tuple, set, frozenset)
    return lambda v: kind(items(x) for x in v) if isinstance(v, many) else v


_ENUM_VALUES = frozenset({str, int, float})  # what JSON gives for an Enum member's value

_FROM_TEXT: dict[type, Convert] = {
    datetime.datetime: datetime.datetime.fromisoformat,
    datetime.date: datetime.date.fromisoformat,
    datetime.time: datetime.time.fromisoformat,
    uuid.UUID: uuid.UUID,
}


def _class_converter(cls: type) -> Convert | None:
    if issubclass(cls, enum.Enum):
        return lambda v: cls(v) if type(v) in _ENUM_VALUES else v
    if dataclasses.is_dataclass(cls):
        return lambda v: _dataclass_from_dict(cls, v) if type(v) is dict else v
    if _is_model_class(cls):
        validate = cls.model_validate  # type: ignore[attr-defined]
        return lambda v: validate(v) if type(v) is dict else v
    if _is_named_tuple_class(cls):
        return lambda v: _named_tuple(cls, v) if isinstance(v, list) else v
    if cls in _FROM_TEXT:
        parse = _FROM_TEXT[cls]
        return lambda v: parse(v) if isinstance(v, str) else v
    if cls is _decimal_type():
        return lambda v: _decimal(str(v)) if isinstance(v, (str, int, float)) else v
    if cls is datetime.timedelta:
        return lambda v: datetime.timedelta(seconds=v) if type(v) in (int, float) else v
    if cls in (tuple, set, frozenset):
        return lambda v: cls(v) if isinstance(v, list) else v
    return None


def _field_converters(cls: type) -> dict[str, Convert]:
    found = _FIELD_CONVERTERS.get(cls)
    if found is None:
        _FIELD_CONVERTERS[cls] = {}  # a class that refers to itself: no loop while learning
        try:
            hints = typing.get_type_hints(cls)
        except Exception:
            hints = {}
        found = {n: c for n, h in hints.items() if (c := _converter(h)) is not None}
        _FIELD_CONVERTERS[cls] = found
    return found


def _dataclass_from_dict(cls: Any, value: dict[str, Any]) -> Any:
    convert = _field_converters(cls)
    return cls(**{k: convert[k](v) if k in convert else v for k, v in value.items()})


def _named_tuple(cls: Any, value: list[Any]) -> Any:
    convert = _field_converters(cls)
    named = zip(cls._fields, value, strict=False)
    return cls(
        *[convert[f](v) if f in convert else v for f, v in named], *value[len(cls._fields) :]
    )


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
