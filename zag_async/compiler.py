"""Compile a flow tree into the flat graph the engine runs.

Compilation gives every atom a `Node`: its edges, the retry controller that
guards it, and for every argument the providers it may read from, nearest
first. Everything a flow can get wrong is found here, before anything runs.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
from collections import deque
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .atom import Atom
from .errors import (
    AmbiguousProvider,
    DependencyCycle,
    DuplicateAtomName,
    FlowChanged,
    MissingRequirements,
    NotFound,
)
from .flow import Decider, Depth, Flow, GraphFlow, Item, LinearFlow
from .retry import Retry

__all__ = ["CompiledFlow", "DeciderSpec", "Node", "compile_flow", "gc_paused"]


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building large acyclic structures.

    Compiling allocates a few objects per atom and frees none of them, which
    makes CPython's collector rescan the growing heap again and again: at
    100,000 atoms that took four times longer than the compilation itself.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@dataclass(slots=True, eq=False)
class DeciderSpec:
    """A decider on the edges into a node."""

    decider: Decider
    depth: Depth
    sources: list[int]  #: nodes whose results the decider reads
    target: list[int]  #: nodes skipped when it says False
    scope: list[int]  #: for Depth.FLOW: the nodes the skip may spread to


@dataclass(slots=True, eq=False)
class Node:
    """One atom (task or retry controller) of a compiled flow."""

    index: int
    atom: Atom
    name: str
    is_retry: bool
    retry: int  #: index of the guarding retry controller, -1 if none
    preds: list[int] = field(default_factory=list)
    succs: list[int] = field(default_factory=list)
    #: for each of atom.args, the nodes that may provide it, nearest first
    cands: tuple[tuple[int, ...], ...] = ()
    #: the same for atom.revert_args
    revert_cands: tuple[tuple[int, ...], ...] = ()
    deciders: list[DeciderSpec] | None = None
    scope: list[int] | None = None  #: retry controllers: the nodes they guard


@dataclass(slots=True)
class CompiledFlow:
    name: str
    nodes: list[Node]
    #: symbol -> indices of the nodes providing it, in flow order
    providers: dict[str, list[int]]

    def find(self, name: str) -> Node | None:
        for node in self.nodes:
            if node.name == name:
                return node
        return None

    def fingerprint(self) -> str:
        """A digest of the flow's shape: atom names, kinds and edges (stored with a
        flow, so a resume can tell the code's flow from the one that was stored)."""
        digest = hashlib.sha256()
        nodes = self.nodes
        for node in nodes:
            preds = ",".join(sorted(nodes[p].name for p in node.preds))
            digest.update(f"{node.name}|{int(node.is_retry)}|{preds}\n".encode())
        return digest.hexdigest()

    def check_matches(self, stored: str, atoms: Collection[str], allow_changes: bool) -> bool:
        """Whether a stored flow (its fingerprint, its atom names) may be resumed with
        this flow: True when they match, False when they differ but `allow_changes`
        lets atoms be matched by name; otherwise `FlowChanged` says what changed."""
        if stored == self.fingerprint():
            return True
        if allow_changes:
            return False
        names = {n.name for n in self.nodes}
        raise FlowChanged(self.name, sorted(names - set(atoms)), sorted(set(atoms) - names))

    def needed_for(self, name: str) -> list[bool]:
        """Which nodes a run targeting atom `name` needs: it and its ancestors."""
        node = self.find(name)
        if node is None:
            raise NotFound(f"flow {self.name!r}: target {name!r} is not an atom of this flow")
        active = [False] * len(self.nodes)
        stack = [node.index]
        while stack:
            i = stack.pop()
            if not active[i]:
                active[i] = True
                stack.extend(self.nodes[i].preds)
        return active

    def check_requirements(self, store: Collection[str], active: list[bool] | None) -> None:
        """Raise `MissingRequirements` for inputs that no atom provides and `store` lacks."""
        missing: dict[str, list[str]] = {}
        for_revert: dict[str, list[str]] = {}
        for node in self.nodes:
            if active is not None and not active[node.index]:
                continue
            for arg, cands in zip(node.atom.args, node.cands, strict=True):
                if not cands and not arg.optional and arg.symbol not in store:
                    missing.setdefault(node.name, []).append(arg.symbol)
            for arg, cands in zip(node.atom.revert_args, node.revert_cands, strict=True):
                symbol = arg.symbol
                if not cands and not arg.optional and symbol not in store:
                    names = missing.setdefault(node.name, [])
                    if symbol not in names:
                        names.append(symbol)
                        for_revert.setdefault(node.name, []).append(symbol)
        if missing:
            raise MissingRequirements(self.name, missing, for_revert)


class _Unit:
    """A compiled item during compilation: its nodes and its entry/exit nodes."""

    __slots__ = (
        "children",
        "item",
        "nodes",
        "preds",
        "provided",
        "requires",
        "retry",
        "sinks",
        "sources",
    )

    def __init__(self, item: Item) -> None:
        self.item = item
        self.nodes: list[int] = []
        self.sources: list[int] = _NONE
        self.sinks: list[int] = _NONE
        self.provided: list[tuple[str, int]] = []  # (symbol, node) in order
        self.requires: Collection[str] = _NONE_STR  # symbols it needs from outside
        self.children: list[_Unit] = _NO_UNITS
        self.preds: list[list[int]] | None = None  # graph flows: child-level predecessors
        self.retry: int = -1


_NONE: list[int] = []
_NONE_STR: list[str] = []
_NO_UNITS: list[_Unit] = []


class _Env:
    """Scoped symbol table: each layer maps a symbol to its nearest provider."""

    __slots__ = ("names", "parent")

    def __init__(self, parent: _Env | None = None) -> None:
        self.parent = parent
        self.names: dict[str, int] = {}

    def lookup(self, symbol: str) -> tuple[int, ...]:
        found: list[int] = []
        env: _Env | None = self
        while env is not None:
            node = env.names.get(symbol)
            if node is not None and node not in found:
                found.append(node)
            env = env.parent
        return tuple(found)


class _Compiler:
    def __init__(self, flow: Flow) -> None:
        self.flow = flow
        self.nodes: list[Node] = []
        self.names: set[str] = set()

    # -- pass 1: nodes, edges, requires/provides ---------------------------------

    def new_node(self, atom: Atom, retry: int) -> int:
        if atom.name in self.names:
            raise DuplicateAtomName(self.flow.name, atom.name)
        node = Node(len(self.nodes), atom, atom.name, atom.is_retry, retry)
        self.nodes.append(node)
        self.names.add(atom.name)
        return node.index

    def edge(self, a: int, b: int) -> None:
        self.nodes[a].succs.append(b)
        self.nodes[b].preds.append(a)

    def edges(self, sources: Iterable[int], targets: Iterable[int]) -> None:
        for a in sources:
            for b in targets:
                self.edge(a, b)

    def build(self, item: Item, retry: int) -> _Unit:
        if isinstance(item, Atom):
            if item.retry_controller is not None:
                ctl = item.retry_controller
                if not ctl.explicit_name:
                    ctl = ctl.bind(name=f"{item.name}.retry")
                return self.guarded(item, ctl, retry, lambda r: [self.build_atom(item, r)])
            return self.build_atom(item, retry)
        if item.retry is not None:
            ctl = (
                item.retry
                if item.retry.explicit_name
                else item.retry.bind(name=f"{item.name}.retry")
            )
            return self.guarded(
                item, ctl, retry, lambda r: [self.build(c, r) for c in item.items], True
            )
        unit = _Unit(item)
        unit.children = [self.build(c, retry) for c in item.items]
        self.combine(unit)
        return unit

    def build_atom(self, atom: Atom, retry: int) -> _Unit:
        # Atoms are most units: keep them small (one shared list, no sets); the
        # lists of a leaf are only ever read or copied, never extended.
        unit = _Unit(atom)
        n = self.new_node(atom, retry)
        unit.nodes = unit.sources = unit.sinks = [n]
        unit.provided = [(s, n) for s in atom.provided]
        unit.requires = [a.symbol for a in atom.args]
        return unit

    def guarded(
        self, item: Item, ctl: Retry, retry: int, children: Any, combine: bool = False
    ) -> _Unit:
        r = self.new_node(ctl, retry)
        unit = _Unit(item)
        unit.retry = r
        unit.children = children(r)
        if combine:
            self.combine(unit)
        else:
            child = unit.children[0]
            unit.nodes, unit.sources, unit.sinks = list(child.nodes), child.sources, child.sinks
            unit.provided, unit.requires = list(child.provided), child.requires
        self.nodes[r].scope = list(unit.nodes)
        self.edges([r], unit.sources)
        unit.sinks = unit.sinks or [r]
        unit.sources = [r]
        unit.nodes.insert(0, r)
        requires = {s for s in unit.requires if s not in ctl.provided}
        requires.update(a.symbol for a in ctl.args)
        unit.requires = requires
        unit.provided = [(s, r) for s in ctl.provided] + unit.provided
        return unit

    def combine(self, unit: _Unit) -> None:
        """Wire a flow's children together according to its pattern."""
        flow = unit.item
        assert isinstance(flow, Flow)
        children = [c for c in unit.children if c.nodes]
        for c in unit.children:
            unit.nodes.extend(c.nodes)
            unit.provided.extend(c.provided)
        requires: set[str] = set()
        if isinstance(flow, LinearFlow):
            provided: set[str] = set()
            for prev, nxt in zip(children, children[1:], strict=False):
                self.edges(prev.sinks, nxt.sources)
            for c in unit.children:
                requires.update(s for s in c.requires if s not in provided)
                provided.update(s for s, _ in c.provided)
            if children:
                unit.sources, unit.sinks = children[0].sources, children[-1].sinks
        elif isinstance(flow, GraphFlow):
            self.combine_graph(flow, unit, requires)
        else:
            for c in children:
                unit.sources = unit.sources + c.sources
                unit.sinks = unit.sinks + c.sinks
            for c in unit.children:
                requires.update(c.requires)
        unit.requires = requires

    def combine_graph(self, flow: GraphFlow, unit: _Unit, requires: set[str]) -> None:
        kids = unit.children
        index = {id(c.item): i for i, c in enumerate(kids)}
        providers: dict[str, list[int]] = {}
        for i, c in enumerate(kids):
            for symbol in {s for s, _ in c.provided}:
                providers.setdefault(symbol, []).append(i)
        preds: list[list[int]] = [[] for _ in kids]
        for j, c in enumerate(kids):
            for symbol in sorted(c.requires):
                found = [i for i in providers.get(symbol, ()) if i != j]
                if len(found) > 1:
                    raise AmbiguousProvider(
                        flow.name, symbol, c.item.name, [kids[i].item.name for i in found]
                    )
                if found:
                    if found[0] not in preds[j]:
                        preds[j].append(found[0])
                else:
                    requires.add(symbol)
        deciders: list[tuple[int, int, Decider, Depth]] = []
        for link in flow.links:
            i, j = index[id(link.source)], index[id(link.target)]
            if i not in preds[j]:
                preds[j].append(i)
            if link.decider is not None:
                deciders.append((i, j, link.decider, link.depth))
        self.check_acyclic(flow, kids, preds)
        has_succ = [False] * len(kids)
        for j, ps in enumerate(preds):
            for i in ps:
                has_succ[i] = True
                self.edges(kids[i].sinks, kids[j].sources)
        for j, c in enumerate(kids):
            if not preds[j]:
                unit.sources = unit.sources + c.sources
            if not has_succ[j]:
                unit.sinks = unit.sinks + c.sinks
        unit.preds = preds
        for i, j, decider, depth in deciders:
            spec = DeciderSpec(decider, depth, list(kids[i].sinks), list(kids[j].nodes), unit.nodes)
            for n in kids[j].sources:
                node = self.nodes[n]
                if node.deciders is None:
                    node.deciders = []
                node.deciders.append(spec)

    @staticmethod
    def check_acyclic(flow: GraphFlow, kids: list[_Unit], preds: list[list[int]]) -> None:
        indegree = [len(ps) for ps in preds]
        succs: list[list[int]] = [[] for _ in kids]
        for j, ps in enumerate(preds):
            for i in ps:
                succs[i].append(j)
        queue = deque(i for i, d in enumerate(indegree) if d == 0)
        seen = 0
        while queue:
            i = queue.popleft()
            seen += 1
            for j in succs[i]:
                indegree[j] -= 1
                if indegree[j] == 0:
                    queue.append(j)
        if seen == len(kids):
            return
        # networkx only off the hot path: to name the cycle once one is known to
        # exist (the check above is the cheap part every compile pays).
        import networkx as nx

        g = nx.DiGraph()
        for j, ps in enumerate(preds):
            for i in ps:
                g.add_edge(i, j)
        cycle = [kids[a].item.name for a, _ in nx.find_cycle(g)]
        raise DependencyCycle(flow.name, [*cycle, cycle[0]])

    # -- pass 2: argument resolution ---------------------------------------------

    def resolve(self, unit: _Unit, env: _Env) -> None:
        if unit.retry >= 0:
            self.resolve_node(self.nodes[unit.retry], env)
            ctl = self.nodes[unit.retry].atom
            if ctl.provided:
                env = _Env(env)
                for symbol in ctl.provided:
                    env.names[symbol] = unit.retry
        item = unit.item
        if isinstance(item, Atom):
            if unit.children:  # an atom guarded by its own retry controller
                self.resolve(unit.children[0], env)
            else:
                self.resolve_node(self.nodes[unit.nodes[0]], env)
        elif isinstance(item, LinearFlow):
            layer = _Env(env)
            for child in unit.children:
                self.resolve(child, layer)
                for symbol, n in child.provided:
                    layer.names[symbol] = n
        elif isinstance(item, GraphFlow):
            assert unit.preds is not None
            for child, preds in zip(unit.children, unit.preds, strict=True):
                layer = _Env(env)
                for i in preds:
                    for symbol, n in unit.children[i].provided:
                        layer.names[symbol] = n
                self.resolve(child, layer)
        else:
            for child in unit.children:
                self.resolve(child, env)

    def resolve_node(self, node: Node, env: _Env) -> None:
        node.cands = tuple(env.lookup(a.symbol) for a in node.atom.args)
        if node.atom.revert_args:
            node.revert_cands = tuple(env.lookup(a.symbol) for a in node.atom.revert_args)


def compile_flow(flow: Flow | Atom) -> CompiledFlow:
    """Compile and check a flow (or a lone atom); raises FlowDefinitionError."""
    if isinstance(flow, Atom):
        flow = LinearFlow(flow.name, flow)
    compiler = _Compiler(flow)
    root = compiler.build(flow, -1)
    compiler.resolve(root, _Env())
    providers: dict[str, list[int]] = {}
    for symbol, n in root.provided:
        providers.setdefault(symbol, []).append(n)
    return CompiledFlow(flow.name, compiler.nodes, providers)
