"""How results and other user values become text for storage, and back.

`JsonCodec` (the default) writes JSON and keeps the Python types JSON lacks
(tuple, set, frozenset, bytes, datetime, date, Decimal, UUID) by tagging
them, so a tuple result is still a tuple after a crash and resume. Anything
else raises `SerializationError` at save time, naming what could not be
written. Any object with `dumps(value) -> str` and `loads(text) -> value`
can replace it. `plain_json` is the lossy form for documents that are read,
not loaded back (job outcomes, flow status over HTTP).
"""

from __future__ import annotations

import base64
import datetime
import decimal
import json
import uuid
from collections.abc import Mapping
from typing import Any, Protocol

from .errors import SerializationError

__all__ = ["Codec", "JsonCodec"]

_TAG = "$zag"


class Codec(Protocol):
    def dumps(self, value: Any) -> str: ...

    def loads(self, text: str) -> Any: ...


def _encode(value: Any) -> Any:
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise SerializationError(f"dict key {k!r} is not a string")
            out[k] = _encode(v)
        if _TAG in out:  # a user dict that looks like a tag: store it as pairs
            return {_TAG: "dict", "v": [[k, v] for k, v in out.items()]}
        return out
    if isinstance(value, tuple):
        return {_TAG: "tuple", "v": [_encode(v) for v in value]}
    if isinstance(value, (set, frozenset)):
        kind = "set" if isinstance(value, set) else "frozenset"
        return {_TAG: kind, "v": [_encode(v) for v in value]}
    if isinstance(value, bytes):
        return {_TAG: "bytes", "v": base64.b64encode(value).decode("ascii")}
    if isinstance(value, datetime.datetime):
        return {_TAG: "datetime", "v": value.isoformat()}
    if isinstance(value, datetime.date):
        return {_TAG: "date", "v": value.isoformat()}
    if isinstance(value, decimal.Decimal):
        return {_TAG: "decimal", "v": str(value)}
    if isinstance(value, uuid.UUID):
        return {_TAG: "uuid", "v": str(value)}
    raise SerializationError(
        f"a {type(value).__qualname__} cannot be stored as JSON: {value!r:.80}"
    )


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
    if kind == "decimal":
        return decimal.Decimal(v)
    if kind == "uuid":
        return uuid.UUID(v)
    if kind == "dict":
        return dict(v)
    raise SerializationError(f"unknown stored type tag {kind!r}")


class JsonCodec:
    """JSON with tags for the common non-JSON Python types."""

    def dumps(self, value: Any) -> str:
        try:
            return json.dumps(_encode(value), separators=(",", ":"), allow_nan=True)
        except SerializationError:
            raise
        except (TypeError, ValueError, RecursionError) as exc:
            raise SerializationError(f"value cannot be stored as JSON: {exc}") from exc

    def loads(self, text: str) -> Any:
        return json.loads(text, object_hook=_decode_tag)


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
