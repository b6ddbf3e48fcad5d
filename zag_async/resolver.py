"""Where an atom's arguments come from: the one symbol resolver.

A symbol is found at the nearest provider that succeeded (its whole result or
one item of it), else in the flow's store, else from the parameter's default.
The engine resolves arguments with it and `Storage.fetch`/`fetch_all` read
values with it, so the two can never disagree about what a name means.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .atom import WHOLE_RESULT, Arg
from .compiler import Node
from .errors import NotFound
from .models import AtomDetail
from .states import AtomState

__all__ = ["Resolver"]

_SUCCESS = AtomState.SUCCESS


class Resolver:
    """Reads symbols from a compiled flow's atom records and its store."""

    __slots__ = ("_details", "_nodes", "_providers", "_store")

    def __init__(
        self,
        nodes: list[Node],
        details: list[AtomDetail],
        providers: Mapping[str, list[int]],
        store: Mapping[str, Any],
    ) -> None:
        self._nodes = nodes
        self._details = details
        self._providers = providers
        self._store = store

    @property
    def symbols(self) -> Iterable[str]:
        """Every symbol some atom of the flow provides."""
        return self._providers.keys()

    def latest(self, symbol: str) -> tuple[bool, Any]:
        """The value of the last provider in flow order that succeeded, if any."""
        return self._first(reversed(self._providers.get(symbol, ())), symbol)

    def _first(self, candidates: Iterable[int], symbol: str) -> tuple[bool, Any]:
        details = self._details
        for c in candidates:
            detail = details[c]
            if detail.state is _SUCCESS:
                atom = self._nodes[c].atom
                key = atom.provided[symbol]
                if key is WHOLE_RESULT:
                    return True, detail.result
                return True, atom.pick(symbol, key, detail.result)
        return False, None

    def arguments(
        self,
        i: int,
        args: tuple[Arg, ...],
        cands: tuple[tuple[int, ...], ...],
        *,
        optional: bool = False,
    ) -> dict[str, Any]:
        """Node i's keyword arguments for `args`, each from its nearest provider.

        With `optional`, a symbol nobody provides is left out instead of raising
        `NotFound` (what a revert that takes `**kwargs` gets).
        """
        atom = self._nodes[i].atom
        kwargs = dict(atom.injected) if atom.injected else {}
        store = self._store
        for arg, providers in zip(args, cands, strict=True):
            symbol = arg.symbol
            found, value = self._first(providers, symbol)
            if found:
                kwargs[arg.param] = value
            elif symbol in store:
                kwargs[arg.param] = store[symbol]
            elif arg.optional:
                kwargs[arg.param] = arg.default
            elif not optional:
                raise NotFound(self._missing(atom.name, arg, providers))
        return kwargs

    def _missing(self, atom: str, arg: Arg, providers: tuple[int, ...]) -> str:
        skipped = ", ".join(
            f"{self._nodes[c].name!r} ({self._details[c].state})" for c in providers
        )
        return (
            f"atom {atom!r}: argument {arg.param!r} needs {arg.symbol!r}, which is "
            f"not available" + (f" (its providers: {skipped})" if skipped else "")
        )
