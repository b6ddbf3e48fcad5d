"""Flow factories: an importable function that builds a flow, saved by reference.

A flow started from a factory can be rebuilt in any process (to resume it
after a crash, or by a conductor that claimed its job): the flow record keeps
`"module:function"` plus the arguments, never pickled code.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .atom import Atom
from .errors import ConfigurationError, FlowDefinitionError
from .flow import Flow

__all__ = ["FactoryRef", "factory_path", "resolve_factory", "used_here"]

#: Factory paths this process has named or built itself (a job posted, a flow started
#: or resumed): what a reader of stored flows (the operations UI) may rebuild without
#: running code that only the database names.
_USED: set[str] = set()


def used_here(path: str) -> bool:
    """True when this process has named or built the factory at `path` itself."""
    return path in _USED


def factory_path(factory: Callable[..., Any] | str) -> str:
    """`"module:qualname"` for a module-level function (or check a given path)."""
    if isinstance(factory, str):
        if ":" not in factory:
            raise ConfigurationError(
                f"factory {factory!r} must be written 'package.module:function'"
            )
        return factory
    module = getattr(factory, "__module__", None)
    qualname = getattr(factory, "__qualname__", None)
    if not module or not qualname or "<" in qualname or module == "__main__":
        raise ConfigurationError(
            f"factory {factory!r} must be a function defined at module level in an importable "
            f"module (not a lambda, a nested function or __main__), so another process can "
            f"import it"
        )
    return f"{module}:{qualname}"


def import_object(path: str, what: str = "object") -> Any:
    """The object at `"package.module:name"` (ConfigurationError if it cannot be imported)."""
    module_name, sep, qualname = path.partition(":")
    if not sep or not module_name or not qualname:
        raise ConfigurationError(f"{what} {path!r} must be written 'package.module:name'")
    try:
        target: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"cannot import {what} {path!r}: {exc}") from exc
    return target


def resolve_factory(path: str) -> Callable[..., Any]:
    target = import_object(path, "flow factory")
    if not callable(target):
        raise ConfigurationError(f"flow factory {path!r} is not callable")
    return target  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class FactoryRef:
    """What to call to build a flow: `path(*args, **kwargs)`."""

    path: str
    args: Sequence[Any] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        factory: Callable[..., Any] | str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> FactoryRef:
        path = factory_path(factory)
        _USED.add(path)
        return cls(path, tuple(args), dict(kwargs or {}))

    def build(self) -> Flow | Atom:
        made = resolve_factory(self.path)(*self.args, **self.kwargs)
        _USED.add(self.path)
        if not isinstance(made, (Flow, Atom)):
            raise FlowDefinitionError(
                f"flow factory {self.path!r} returned {type(made).__name__}, not a flow or atom"
            )
        return made

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "args": list(self.args), "kwargs": dict(self.kwargs)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FactoryRef:
        return cls(data["path"], tuple(data.get("args", ())), dict(data.get("kwargs", {})))
