"""Atoms: the units a flow is made of, and `Task`/`@task`, the ones users write.

An atom declares what it needs through its signature (parameters with defaults
are optional) and what it gives through `provides`:

- a string: the whole result under that name;
- a tuple/list of names: the result is a sequence unpacked by position;
- a set of names: the result is a mapping, each name read as a key;
- a dict `{name: key}`: each provided name read from that key (or index).

How it is undone: `revert` (retried by `revert_retry`, a `zag.retry.RevertRetry`),
or not at all for an `irreversible` atom (a pivot: once it succeeded, the flow
retries forward instead of reverting past it).
"""

from __future__ import annotations

import copy
import functools
import inspect
import math
import typing
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, overload

from .errors import InvalidAtom, ResultMismatch

if TYPE_CHECKING:
    from .retry import Retry, RevertRetry

__all__ = ["Arg", "Atom", "FunctionTask", "Task", "task"]

Provides = str | Sequence[str] | set[str] | frozenset[str] | Mapping[str, Any] | None
Rebind = Mapping[str, str] | Sequence[str] | None

#: Names the engine passes to `revert` itself; they are never requirements.
REVERT_KEYWORDS = ("result", "flow_failures")
#: The key of a provided name that takes an atom's whole result (not one item of it).
WHOLE_RESULT = object()
_NO_VALUES: Mapping[str, Any] = MappingProxyType({})
_NO_NAMES: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Arg:
    """One argument of an atom's call: parameter `param` is fed from `symbol`."""

    param: str
    symbol: str
    optional: bool
    default: Any = None


#: The longest atom (and provided) name: names are keys in every backend's tables.
MAX_NAME = 255


def check_name(what: str, name: Any) -> str:
    """`name` if every backend can store it as a key, else InvalidAtom naming `what`."""
    if not isinstance(name, str) or not name:
        raise InvalidAtom(f"{what} must be a non-empty string, got {name!r}")
    if len(name) > MAX_NAME:
        raise InvalidAtom(f"{what} is longer than {MAX_NAME} characters: {name[:40]!r}...")
    if "\x00" in name:
        raise InvalidAtom(f"{what} must not contain NUL characters: {name!r}")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidAtom(f"{what} is not valid text (a lone surrogate?): {name!r}") from None
    return name


def _normalize_provides(atom: str, provides: Provides) -> dict[str, Any]:
    """Map each provided name to how it is read from the result."""
    if provides is None:
        return {}
    if isinstance(provides, str):
        check_name(f"atom {atom!r}: the provided name", provides)
        return {provides: WHOLE_RESULT}
    if isinstance(provides, Mapping):
        out = dict(provides)
    elif isinstance(provides, (set, frozenset)):
        for name in provides:
            check_name(f"atom {atom!r}: a provided name", name)
        out = {name: name for name in sorted(provides)}
    elif isinstance(provides, (list, tuple)):
        for name in provides:
            check_name(f"atom {atom!r}: a provided name", name)
        if len(set(provides)) != len(provides):
            raise InvalidAtom(f"atom {atom!r}: provides {provides!r} repeats a name")
        out = {name: i for i, name in enumerate(provides)}
    else:
        raise InvalidAtom(
            f"atom {atom!r}: provides must be a name, a tuple/list, a set or a dict, "
            f"not {type(provides).__name__}"
        )
    for name in out:
        check_name(f"atom {atom!r}: a provided name", name)
    return out


def _signature(atom: str, fn: Callable[..., Any]) -> inspect.Signature:
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise InvalidAtom(f"atom {atom!r}: cannot read the signature of {fn!r}") from exc


def _build_args(
    atom: str,
    sig: inspect.Signature,
    rebind: Mapping[str, str],
    inject: Mapping[str, Any],
    skip: Iterable[str] = (),
) -> tuple[tuple[Arg, ...], bool]:
    """Arguments from a signature; returns (args, accepts **kwargs)."""
    skipped = set(skip)
    args: list[Arg] = []
    var_kw = False
    seen: set[str] = set()
    for p in sig.parameters.values():
        if p.kind is p.VAR_KEYWORD:
            var_kw = True
            continue
        if p.kind is p.VAR_POSITIONAL or p.name in skipped:
            continue
        if p.kind is p.POSITIONAL_ONLY:
            raise InvalidAtom(
                f"atom {atom!r}: positional-only parameter {p.name!r} is not supported"
            )
        seen.add(p.name)
        if p.name in inject:
            continue
        optional = p.default is not p.empty
        args.append(
            Arg(p.name, rebind.get(p.name, p.name), optional, p.default if optional else None)
        )
    if var_kw:
        # Rebound names that are not parameters go through **kwargs.
        for param, symbol in rebind.items():
            if param not in seen and param not in skipped and param not in inject:
                args.append(Arg(param, symbol, False))
    return tuple(args), var_kw


def _is_async(fn: Callable[..., Any]) -> bool:
    call = getattr(type(fn), "__call__", None)  # noqa: B004 (the method, not callability)
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(call)


def _fixed_tuple_len(fn: Callable[..., Any]) -> int | None:
    """Length of a `-> tuple[A, B]` return annotation, if it has one."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:
        return None
    ret = hints.get("return")
    if typing.get_origin(ret) is not tuple:
        return None
    params = typing.get_args(ret)
    if not params or Ellipsis in params or params == ((),):
        return None
    return len(params)


class Atom:
    """Something a flow runs and may revert: a task or a retry controller.

    The class attributes below are declarations a subclass may set; the
    constructor's keyword arguments override them for one instance.
    """

    provides: ClassVar[Provides] = None
    rebind: ClassVar[Rebind] = None
    inject: ClassVar[Mapping[str, Any] | None] = None
    timeout: ClassVar[float | None] = None
    idempotent: ClassVar[bool] = True
    revert_retry: ClassVar[RevertRetry | None] = None
    irreversible: ClassVar[bool] = False

    #: Set on retry controllers; lets the engine tell the kinds apart cheaply.
    is_retry: ClassVar[bool] = False
    #: Set on waits (`zag.wait_for`, `zag.sleep`): the engine completes them itself.
    is_wait: ClassVar[bool] = False

    # Flows may hold 100,000 atoms: keep the per-atom state in slots.
    __slots__ = (
        "args",
        "execute_async",
        "execute_fn",
        "injected",
        "is_idempotent",
        "is_pivot",
        "name",
        "needs_check",
        "provided",
        "retry_controller",
        "revert_args",
        "revert_async",
        "revert_fn",
        "revert_injected",
        "revert_keywords",
        "revert_policy",
        "revert_var_kw",
        "timeout_s",
        "__weakref__",
    )

    name: str
    args: tuple[Arg, ...]
    revert_args: tuple[Arg, ...]
    provided: dict[str, Any]
    timeout_s: float | None
    is_idempotent: bool
    is_pivot: bool
    revert_policy: RevertRetry
    retry_controller: Retry | None
    injected: Mapping[str, Any]
    execute_fn: Callable[..., Any] | None
    execute_async: bool
    revert_fn: Callable[..., Any] | None
    revert_async: bool
    revert_var_kw: bool
    revert_keywords: frozenset[str]
    revert_injected: Mapping[str, Any]
    needs_check: bool

    def __init__(
        self,
        *,
        name: str | None = None,
        provides: Provides = None,
        rebind: Rebind = None,
        inject: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        retry: Retry | None = None,
        idempotent: bool | None = None,
        revert_retry: RevertRetry | None = None,
        irreversible: bool | None = None,
    ) -> None:
        self.name = check_name("an atom's name", name if name is not None else self._default_name())
        self._declare(
            provides=provides if provides is not None else type(self).provides,
            rebind=rebind if rebind is not None else type(self).rebind,
            inject=inject if inject is not None else type(self).inject,
            timeout=timeout if timeout is not None else type(self).timeout,
            retry=retry,
            idempotent=idempotent if idempotent is not None else type(self).idempotent,
            revert_retry=revert_retry if revert_retry is not None else type(self).revert_retry,
            irreversible=irreversible if irreversible is not None else type(self).irreversible,
        )

    # -- declaration -------------------------------------------------------------

    def _default_name(self) -> str:
        return type(self).__name__

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        """Do the atom's work; subclasses define it."""
        raise NotImplementedError(f"{type(self).__name__} must define execute()")

    def _execute_callable(self) -> Callable[..., Any]:
        raise NotImplementedError

    def _revert_callable(self) -> Callable[..., Any] | None:
        return None

    def _arg_skip(self) -> tuple[str, ...]:
        """Parameters of execute that the engine fills itself."""
        return ()

    def _declare(
        self,
        *,
        provides: Provides,
        rebind: Rebind,
        inject: Mapping[str, Any] | None,
        timeout: float | None,
        retry: Retry | None,
        idempotent: bool,
        revert_retry: RevertRetry | None = None,
        irreversible: bool = False,
    ) -> None:
        name = self.name
        if timeout is not None and (
            not isinstance(timeout, (int, float))
            or isinstance(timeout, bool)
            or not math.isfinite(timeout)
            or timeout <= 0
        ):
            raise InvalidAtom(
                f"atom {name!r}: timeout must be a positive, finite number of seconds, "
                f"got {timeout!r}"
            )
        if not isinstance(idempotent, bool):
            raise InvalidAtom(
                f"atom {name!r}: idempotent must be True or False, got {idempotent!r}"
            )
        if inject is not None and not isinstance(inject, Mapping):
            raise InvalidAtom(
                f"atom {name!r}: inject must be a dict of parameter name to value, "
                f"got {type(inject).__name__} {inject!r}"[:300]
            )
        for key in inject or {}:
            check_name(f"atom {name!r}: an inject key", key)
        self.timeout_s = float(timeout) if timeout is not None else None
        self.is_idempotent = bool(idempotent)
        if retry is not None:
            from .retry import Retry

            if not isinstance(retry, Retry):
                raise InvalidAtom(
                    f"atom {name!r}: retry= takes a retry controller such as zag.retry.Times(3)"
                )
        self.retry_controller = retry
        from .retry import DEFAULT_REVERT_RETRY, RevertRetry

        if revert_retry is not None and not isinstance(revert_retry, RevertRetry):
            raise InvalidAtom(
                f"atom {name!r}: revert_retry= takes a policy such as "
                f"zag.retry.RevertRetry(attempts=5, delay=1.0), not {revert_retry!r}"
            )
        if not isinstance(irreversible, bool):
            raise InvalidAtom(f"atom {name!r}: irreversible must be True or False")
        self.revert_policy = revert_retry if revert_retry is not None else DEFAULT_REVERT_RETRY
        self.is_pivot = irreversible
        self.provided = _normalize_provides(name, provides)
        self.injected = dict(inject) if inject else _NO_VALUES

        fn = self._execute_callable()
        sig = _signature(name, fn)
        params = [
            p.name
            for p in sig.parameters.values()
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name not in self._arg_skip()
        ]
        rebind_map: dict[str, str]
        if rebind is None:
            rebind_map = {}
        elif isinstance(rebind, Mapping):
            rebind_map = dict(rebind)
            for param, symbol in rebind_map.items():
                check_name(f"atom {name!r}: a rebind key", param)
                check_name(f"atom {name!r}: rebind of {param!r}", symbol)
        elif isinstance(rebind, (list, tuple)):
            for symbol in rebind:
                check_name(f"atom {name!r}: a rebind name", symbol)
            if len(rebind) > len(params):
                raise InvalidAtom(
                    f"atom {name!r}: rebind lists {len(rebind)} names but execute takes "
                    f"{len(params)} parameters ({', '.join(params)})"
                )
            rebind_map = dict(zip(params, rebind, strict=False))
        else:
            raise InvalidAtom(f"atom {name!r}: rebind must be a dict or a list of names")

        revert_fn = self._revert_callable()
        if irreversible:
            if self.is_retry:
                raise InvalidAtom(f"retry controller {name!r} cannot be irreversible")
            if revert_fn is not None:
                raise InvalidAtom(
                    f"atom {name!r} is irreversible (a pivot) but has a revert; an atom "
                    f"that can be undone is not a pivot: drop one of them"
                )
            if revert_retry is not None:
                raise InvalidAtom(
                    f"atom {name!r} is irreversible (a pivot): it is never reverted, "
                    f"so revert_retry= means nothing"
                )
        revert_sig = _signature(name, revert_fn) if revert_fn is not None else None
        revert_params = set(revert_sig.parameters) if revert_sig is not None else set()
        has_var_kw = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
        for param in rebind_map:
            if param not in params and param not in revert_params and not has_var_kw:
                raise InvalidAtom(
                    f"atom {name!r}: rebind names {param!r}, which is not a parameter of "
                    f"execute ({', '.join(params) or 'none'})"
                )
        for param in self.injected:
            if param not in params and param not in revert_params and not has_var_kw:
                raise InvalidAtom(
                    f"atom {name!r}: inject names {param!r}, which is not a parameter of "
                    f"execute ({', '.join(params) or 'none'})"
                )
        self.args, _ = _build_args(name, sig, rebind_map, self.injected, self._arg_skip())
        # A method of this atom is looked up when called (saves a bound method per atom).
        self.execute_fn = None if getattr(fn, "__self__", None) is self else fn
        self.execute_async = _is_async(fn)
        self.revert_fn = revert_fn
        self.revert_async = revert_fn is not None and _is_async(revert_fn)
        if revert_sig is not None:
            revert_args, self.revert_var_kw = _build_args(
                name, revert_sig, rebind_map, self.injected, REVERT_KEYWORDS
            )
            # A revert parameter that execute also takes gets the value execute got,
            # including execute's default.
            by_param = {a.param: a for a in self.args}
            self.revert_args = tuple(
                Arg(a.param, a.symbol, True, by_param[a.param].default)
                if a.param in by_param and by_param[a.param].optional
                else a
                for a in revert_args
            )
            self.revert_keywords = frozenset(
                k for k in REVERT_KEYWORDS if k in revert_sig.parameters
            )
            self.revert_injected = {
                k: v for k, v in self.injected.items() if k in revert_sig.parameters
            } or _NO_VALUES
        else:
            self.revert_args, self.revert_var_kw, self.revert_keywords = (), False, _NO_NAMES
            self.revert_injected = _NO_VALUES
        self.needs_check = any(key is not WHOLE_RESULT for key in self.provided.values())

        if isinstance(provides, (list, tuple)):
            expected = _fixed_tuple_len(fn)
            if expected is not None and expected < len(provides):
                raise InvalidAtom(
                    f"atom {name!r}: provides {len(provides)} names {tuple(provides)!r} but "
                    f"execute is annotated to return a {expected}-tuple"
                )

    # -- what the engine uses ----------------------------------------------------

    @property
    def requires(self) -> frozenset[str]:
        """Symbols this atom needs to execute (optional ones included)."""
        return frozenset(a.symbol for a in self.args)

    @property
    def optional(self) -> frozenset[str]:
        return frozenset(a.symbol for a in self.args if a.optional)

    @property
    def revert_requires(self) -> frozenset[str]:
        return frozenset(a.symbol for a in self.revert_args)

    def extract(self, result: Any) -> dict[str, Any]:
        """Split a result into the provided names, or raise ResultMismatch."""
        out: dict[str, Any] = {}
        for symbol, key in self.provided.items():
            out[symbol] = self.pick(symbol, key, result)
        return out

    def pick(self, symbol: str, key: Any, result: Any) -> Any:
        if key is WHOLE_RESULT:
            return result
        try:
            return result[key]
        except (IndexError, KeyError, TypeError) as exc:
            if isinstance(key, int):
                raise ResultMismatch(
                    f"atom {self.name!r}: provides {tuple(self.provided)!r} needs a sequence of "
                    f"at least {len(self.provided)} items, got {_describe(result)}"
                ) from exc
            raise ResultMismatch(
                f"atom {self.name!r}: provides {symbol!r} from key {key!r}, which the result "
                f"({_describe(result)}) does not have"
            ) from exc

    def check_result(self, result: Any) -> None:
        """Raise ResultMismatch now if the result cannot feed `provides`."""
        for symbol, key in self.provided.items():
            if key is not WHOLE_RESULT:
                self.pick(symbol, key, result)

    def bind(
        self: _A,
        *,
        name: str | None = None,
        provides: Provides = None,
        rebind: Rebind = None,
        inject: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        retry: Retry | None = None,
        idempotent: bool | None = None,
        revert_retry: RevertRetry | None = None,
        irreversible: bool | None = None,
    ) -> _A:
        """A new atom like this one with some declarations replaced."""
        clone = copy.copy(self)
        new = (provides, rebind, inject, timeout, retry, idempotent, revert_retry, irreversible)
        decl = [
            old if value is None else value
            for old, value in zip(self._declared(), new, strict=True)
        ]
        if name is not None:
            clone.name = name
        clone._redeclare(tuple(decl))  # noqa: SLF001 - a copy of self, same class
        return clone

    def _declared(self) -> tuple[Any, ...]:
        """The declarations this atom was made with, rebuilt from what was kept."""
        rebind = {a.param: a.symbol for a in (*self.args, *self.revert_args) if a.param != a.symbol}
        return (
            dict(self.provided) or None,
            rebind or None,
            dict(self.injected) or None,
            self.timeout_s,
            self.retry_controller,
            self.is_idempotent,
            self._revert_retry_declared(),
            self.is_pivot,
        )

    def _revert_retry_declared(self) -> RevertRetry | None:
        from .retry import DEFAULT_REVERT_RETRY

        return None if self.revert_policy is DEFAULT_REVERT_RETRY else self.revert_policy

    def _redeclare(self, decl: tuple[Any, ...]) -> None:
        provides, rebind, inject, timeout, retry, idempotent, revert_retry, irreversible = decl
        self._declare(
            provides=provides,
            rebind=rebind,
            inject=inject,
            timeout=timeout,
            retry=retry,
            idempotent=idempotent,
            revert_retry=revert_retry,
            irreversible=irreversible,
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


_A = TypeVar("_A", bound=Atom)


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


class Task(Atom):
    """A step of work: subclass it and define `async def execute(...)`.

    Define `revert(...)` to undo it; revert may take the keyword-only
    parameters `result` (this task's result, or its `Failure`) and
    `flow_failures` (`{atom name: Failure}`), or receive them through
    `**kwargs`. Plain `def` methods run in a worker thread.
    """

    __slots__ = ()

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define execute()")

    def revert(self, *args: Any, **kwargs: Any) -> Any:
        return None

    def _execute_callable(self) -> Callable[..., Any]:
        if type(self).execute is Task.execute:
            raise InvalidAtom(f"task {self.name!r}: {type(self).__name__} must define execute()")
        return self.execute

    def _revert_callable(self) -> Callable[..., Any] | None:
        if type(self).revert is Task.revert:
            return None
        return self.revert


class FunctionTask(Task):
    """A task made from a function by `@zag.task`."""

    def __init__(self, fn: Callable[..., Any], **kwargs: Any) -> None:
        if not callable(fn):
            raise InvalidAtom(f"@task needs a function, got {fn!r}")
        self._fn = fn
        self._revert_fn: Callable[..., Any] | None = None
        functools.update_wrapper(self, fn)
        super().__init__(**kwargs)

    def _default_name(self) -> str:
        return str(getattr(self._fn, "__name__", "task"))

    def _execute_callable(self) -> Callable[..., Any]:
        return self._fn

    def _revert_callable(self) -> Callable[..., Any] | None:
        return self._revert_fn

    def revert(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Decorator: register `fn` as this task's compensation; returns `fn`."""
        if not callable(fn):
            raise InvalidAtom(f"task {self.name!r}: @revert needs a function, got {fn!r}")
        self._revert_fn = fn
        self._redeclare(self._declared())
        return fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the underlying function directly (handy in unit tests)."""
        return self._fn(*args, **kwargs)


_F = TypeVar("_F", bound=Callable[..., Any])


@overload
def task(fn: Callable[..., Awaitable[Any]] | Callable[..., Any], /) -> FunctionTask: ...


@overload
def task(
    *,
    name: str | None = None,
    provides: Provides = None,
    rebind: Rebind = None,
    inject: Mapping[str, Any] | None = None,
    timeout: float | None = None,
    retry: Retry | None = None,
    idempotent: bool | None = None,
    revert_retry: RevertRetry | None = None,
    irreversible: bool | None = None,
) -> Callable[[Callable[..., Any]], FunctionTask]: ...


def task(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    provides: Provides = None,
    rebind: Rebind = None,
    inject: Mapping[str, Any] | None = None,
    timeout: float | None = None,
    retry: Retry | None = None,
    idempotent: bool | None = None,
    revert_retry: RevertRetry | None = None,
    irreversible: bool | None = None,
) -> FunctionTask | Callable[[Callable[..., Any]], FunctionTask]:
    """Turn a function (async or plain) into a task atom.

    Use bare (`@zag.task`) or with keywords (`@zag.task(provides="total")`).
    Each application makes a new, distinct atom. `revert_retry` sets how its
    revert is retried; `irreversible=True` makes it a pivot (no revert).
    """
    kwargs: dict[str, Any] = {
        "name": name,
        "provides": provides,
        "rebind": rebind,
        "inject": inject,
        "timeout": timeout,
        "retry": retry,
        "idempotent": idempotent,
        "revert_retry": revert_retry,
        "irreversible": irreversible,
    }
    if fn is not None:
        return FunctionTask(fn, **kwargs)

    def decorate(f: Callable[..., Any]) -> FunctionTask:
        return FunctionTask(f, **kwargs)

    return decorate
