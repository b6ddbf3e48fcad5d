"""Flow patterns: how atoms are composed.

- `linear(name, *items)`: one after the other; each sees what came before.
- `unordered(name, *items)`: no order between items; they may run at once and
  cannot feed each other.
- `graph(name, *items)`: order inferred from what each item requires and
  provides, plus explicit `link(a, b)` edges, optionally with a decider.

Items are atoms or other flows, nested freely. A flow may carry a retry
controller (`retry=`) that guards everything in it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar, Self

from .atom import Atom, check_name
from .errors import FlowDefinitionError, InvalidAtom
from .retry import Retry

__all__ = [
    "Decider",
    "Depth",
    "Flow",
    "GraphFlow",
    "Item",
    "LinearFlow",
    "Link",
    "UnorderedFlow",
    "graph",
    "linear",
    "unordered",
]

#: Receives `{source atom name: result}` for a link's source atoms; False skips the target.
Decider = Callable[[Mapping[str, Any]], bool | Awaitable[bool]]


class Depth(StrEnum):
    """How far a decider's "skip" spreads from the link's target."""

    ALL = "ALL"  #: the target and everything that depends on it
    FLOW = "FLOW"  #: the target and what depends on it within the same graph flow
    NEIGHBORS = "NEIGHBORS"  #: the target and its direct successors
    ATOM = "ATOM"  #: the target alone


class Flow:
    """Base of the flow patterns; holds a name, items and an optional retry."""

    kind: ClassVar[str] = "flow"

    def __init__(self, name: str, *items: Item, retry: Retry | None = None) -> None:
        try:
            check_name("a flow's name", name)
        except InvalidAtom as exc:
            raise FlowDefinitionError(str(exc)) from None
        if retry is not None and not isinstance(retry, Retry):
            raise FlowDefinitionError(
                f"flow {name!r}: retry= takes a retry controller such as zag.retry.Times(3), "
                f"not {type(retry).__name__}"
            )
        self.name = name
        self.retry = retry
        self.items: list[Item] = []
        self.add(*items)

    def add(self, *items: Item) -> Self:
        """Append items (atoms or flows); returns the flow for chaining."""
        for item in items:
            if not isinstance(item, (Atom, Flow)):
                hint = " (decorate it with @zag.task)" if callable(item) else ""
                raise FlowDefinitionError(
                    f"flow {self.name!r}: item {len(self.items) + 1} is {item!r}, which is "
                    f"neither an atom nor a flow{hint}"
                )
            if isinstance(item, Retry):
                raise FlowDefinitionError(
                    f"flow {self.name!r}: retry controller {item.name!r} must be given as retry=, "
                    f"not as an item"
                )
            if item is self:
                raise FlowDefinitionError(f"flow {self.name!r} cannot contain itself")
            self.items.append(item)
        return self

    def __iter__(self) -> Iterator[Item]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def iter_atoms(self) -> Iterator[Atom]:
        """Every atom inside, depth first (retry controllers not included)."""
        for item in self.items:
            if isinstance(item, Flow):
                yield from item.iter_atoms()
            else:
                yield item

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} ({len(self.items)} items)>"


class LinearFlow(Flow):
    kind = "linear"


class UnorderedFlow(Flow):
    kind = "unordered"


@dataclass(frozen=True)
class Link:
    """An explicit edge of a graph flow."""

    source: Item
    target: Item
    decider: Decider | None = None
    depth: Depth = Depth.ALL


class GraphFlow(Flow):
    kind = "graph"

    def __init__(self, name: str, *items: Item, retry: Retry | None = None) -> None:
        self.links: list[Link] = []
        super().__init__(name, *items, retry=retry)

    def _member(self, ref: Item | str, role: str) -> Item:
        for item in self.items:
            if item is ref or (isinstance(ref, str) and item.name == ref):
                return item
        label = ref if isinstance(ref, str) else getattr(ref, "name", repr(ref))
        raise FlowDefinitionError(
            f"graph flow {self.name!r}: link {role} {label!r} is not an item of this flow; "
            f"add it first"
        )

    def link(
        self,
        source: Item | str,
        target: Item | str,
        *,
        decider: Decider | None = None,
        depth: Depth | str = Depth.ALL,
    ) -> Self:
        """Make `target` wait for `source`; with a decider, maybe skip `target`.

        The decider gets `{source atom name: result}` and returns a bool; on
        False the target ends IGNORE and the skip spreads per `depth`.
        """
        src = self._member(source, "source")
        dst = self._member(target, "target")
        if src is dst:
            raise FlowDefinitionError(
                f"graph flow {self.name!r}: cannot link {src.name!r} to itself"
            )
        if decider is not None and not callable(decider):
            raise FlowDefinitionError(f"graph flow {self.name!r}: decider must be callable")
        try:
            depth = Depth(depth)
        except ValueError:
            raise FlowDefinitionError(
                f"graph flow {self.name!r}: depth must be one of "
                f"{', '.join(d.value for d in Depth)}"
            ) from None
        self.links.append(Link(src, dst, decider, depth))
        return self


Item = Atom | Flow


def linear(name: str, *items: Item, retry: Retry | None = None) -> LinearFlow:
    """Items run one after another; each sees the outputs of those before it."""
    return LinearFlow(name, *items, retry=retry)


def unordered(name: str, *items: Item, retry: Retry | None = None) -> UnorderedFlow:
    """Items have no order between them and may run concurrently."""
    return UnorderedFlow(name, *items, retry=retry)


def graph(name: str, *items: Item, retry: Retry | None = None) -> GraphFlow:
    """Order inferred from requires/provides; add edges and deciders with `link()`."""
    return GraphFlow(name, *items, retry=retry)
