"""`Failure`: an exception captured so it can be stored, sent and re-raised."""

from __future__ import annotations

import json
import sys
import traceback as tb_module
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, NoReturn

from .errors import RemoteFailure, WrappedFailure

__all__ = ["Failure", "error_text"]


def _qualname(cls: type) -> str:
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def _json_safe(value: Any) -> Any:
    """Keep JSON-native values, describe everything else with repr()."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _json_safe(v) for k, v in value.items()}
    return repr(value)


def _rebuild(failure: Failure) -> BaseException | None:
    """An exception of the failure's own type, if that class is already imported.

    Nothing is imported on behalf of a failure (its type names may come from
    another process): only classes in modules loaded here are used.
    """
    module, _, qualname = failure.exception_type.rpartition(".")
    namespace = sys.modules.get(module or "builtins")
    target: Any = namespace
    for part in qualname.split("."):
        target = getattr(target, part, None)
    if not (isinstance(target, type) and issubclass(target, Exception)):
        return None
    try:
        exc = target.__new__(target)
        exc.args = tuple(failure.args)
    except Exception:
        return None
    return exc


@dataclass(frozen=True, eq=False)
class Failure:
    """What is known about an exception, in a form that survives JSON.

    `exception_types` lists the exception's class and its bases (most derived
    first) as qualified names, so `check()` works even where the class cannot
    be imported. `exception` is the live exception object when the failure
    happened in this process, and `None` once it has been serialised.
    """

    exception_types: tuple[str, ...]
    message: str
    args: tuple[Any, ...] = ()
    traceback_text: str = field(default="", repr=False)
    cause: Failure | None = None
    exception: BaseException | None = field(default=None, repr=False, compare=False)
    # The traceback as captured; formatted only when someone asks (it is slow).
    _tb: TracebackType | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_exception(cls, exc: BaseException) -> Failure:
        """Capture `exc`, its traceback and its cause chain.

        A `RemoteFailure` (a failure from elsewhere, re-raised here) gives back
        the failure it carries, so the original exception types are kept.
        """
        if isinstance(exc, RemoteFailure):
            return exc.failure
        return cls._capture(exc, set())

    @classmethod
    def _capture(cls, exc: BaseException, seen: set[int]) -> Failure:
        seen.add(id(exc))
        nxt = exc.__cause__ if exc.__cause__ is not None else exc.__context__
        if exc.__suppress_context__ and exc.__cause__ is None:
            nxt = None
        cause = cls._capture(nxt, seen) if nxt is not None and id(nxt) not in seen else None
        return cls(
            exception_types=tuple(_qualname(c) for c in type(exc).__mro__ if c is not object),
            message=str(exc),
            args=tuple(_json_safe(a) for a in exc.args),
            cause=cause,
            exception=exc,
            _tb=exc.__traceback__,
        )

    @property
    def traceback(self) -> str:
        """The formatted traceback of the exception (without its cause chain)."""
        exc = self.exception
        if not self.traceback_text and exc is not None:
            lines = tb_module.format_exception(type(exc), exc, self._tb, chain=False)
            object.__setattr__(self, "traceback_text", "".join(lines))
        return self.traceback_text

    @property
    def exception_type(self) -> str:
        """Qualified name of the exception's own class."""
        return self.exception_types[0] if self.exception_types else "Exception"

    def check(self, *types: type[BaseException] | str) -> type[BaseException] | str | None:
        """Return the first of `types` this failure is an instance of, else None.

        Types may be given as classes or as qualified names ("builtins" names
        such as "ValueError" need no module).
        """
        for t in types:
            name = _qualname(t) if isinstance(t, type) else t
            if name in self.exception_types:
                return t
        return None

    def reraise(self) -> NoReturn:
        """Raise the original exception, or the best stand-in when it is not at hand.

        Without the live exception (the failure was loaded from storage or came
        from a remote worker) an exception of the original type is rebuilt when
        that type is already imported here (builtins, zag errors, your own
        modules), with `RemoteFailure` as its cause; otherwise `RemoteFailure`.
        """
        raise self.to_exception()

    def to_exception(self) -> BaseException:
        """The exception `reraise()` raises."""
        if self.exception is not None:
            return self.exception
        remote = RemoteFailure(self)
        rebuilt = _rebuild(self)
        if rebuilt is None:
            return remote
        rebuilt.__cause__ = remote
        return rebuilt

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; `from_dict` reverses it (without the live exception)."""
        return {
            "exception_types": list(self.exception_types),
            "message": self.message,
            "args": list(self.args),
            "traceback": self.traceback,
            "cause": self.cause.to_dict() if self.cause is not None else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Failure:
        cause = data.get("cause")
        return cls(
            exception_types=tuple(data["exception_types"]),
            message=data["message"],
            args=tuple(data.get("args", ())),
            traceback_text=data.get("traceback", ""),
            cause=cls.from_dict(cause) if cause else None,
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> Failure:
        return cls.from_dict(json.loads(text))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Failure):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash((self.exception_types, self.message))

    def __str__(self) -> str:
        return f"Failure({error_text(self)})"


def error_text(error: BaseException | Failure) -> str:
    """The one line a person reads about an error: "Type: message".

    A `Failure` gives its qualified type name (`builtins` names bare, as
    stored); a live exception gives its class name.
    """
    if isinstance(error, Failure):
        return f"{error.exception_type}: {error.message}"
    return f"{type(error).__name__}: {error}"


def as_exception(failures: Mapping[str, Failure]) -> BaseException | None:
    """What a run with these failures raises: the one failure's exception, or a
    `WrappedFailure` carrying several (None for none)."""
    if not failures:
        return None
    if len(failures) == 1:
        return next(iter(failures.values())).to_exception()
    return WrappedFailure(failures)
