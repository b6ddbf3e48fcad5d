"""Pictures of flows: Mermaid and Graphviz text, and SVG/PNG through Graphviz.

    print(zag.pictures.to_mermaid(flow))                     # paste into Markdown
    svg = zag.pictures.render(flow, "svg", states={"charge": "FAILURE"})

The picture is drawn from the compiled flow, so it shows what the engine
runs: each pattern (linear, unordered, graph) is a cluster, an edge that
carries data is labelled with the names it carries, an edge that only orders
two atoms is dashed, a link with a decider is bold and marked with a diamond
and the decider's name, retry controllers are hexagons, and irreversible atoms
(pivots: past them nothing is reverted) have a double border. With `states`
(atom name -> state name) atoms are coloured by state.

SVG and PNG need Graphviz's `dot` program (Debian package `graphviz`).
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from .atom import Atom
from .compiler import CompiledFlow, DeciderSpec, compile_flow
from .errors import ConfigurationError, ExecutionError
from .flow import Depth, Flow
from .retry import Retry

__all__ = ["FORMATS", "STATE_COLOURS", "render", "to_dot", "to_mermaid"]

#: What `render` can produce.
FORMATS = ("mermaid", "dot", "svg", "png")

#: Fill and border colour of an atom in each state.
STATE_COLOURS: Mapping[str, tuple[str, str]] = {
    "PENDING": ("#eeeeee", "#9e9e9e"),
    "RUNNING": ("#bbdefb", "#1565c0"),
    "SUCCESS": ("#c8e6c9", "#2e7d32"),
    "FAILURE": ("#ffcdd2", "#c62828"),
    "REVERTING": ("#ffe0b2", "#ef6c00"),
    "REVERTED": ("#ffe0b2", "#ef6c00"),
    "REVERT_FAILURE": ("#ef9a9a", "#b71c1c"),
    "RETRYING": ("#fff9c4", "#f9a825"),
    "IGNORE": ("#fafafa", "#bdbdbd"),
}

#: How long `dot` may take before rendering is given up.
DOT_TIMEOUT = 60.0


@dataclass(slots=True)
class _Cluster:
    """One flow pattern of the picture: its own atoms and its nested flows."""

    name: str
    kind: str
    nodes: list[int] = field(default_factory=list)
    children: list[_Cluster] = field(default_factory=list)


@dataclass(slots=True)
class _Edge:
    ordered: bool = False  #: the engine orders the two atoms
    data: list[str] = field(default_factory=list)  #: names the target reads from the source
    deciders: list[str] = field(default_factory=list)  #: decider labels on this link


@dataclass(slots=True)
class _Picture:
    """What both text formats draw: nodes, clusters and merged edges."""

    compiled: CompiledFlow
    root: _Cluster | None
    loose: list[int]  #: nodes outside any cluster
    edges: dict[tuple[int, int], _Edge]

    def body(
        self,
        node_line: Callable[[int, str], str],
        open_cluster: Callable[[_Cluster, int, str], list[str]],
        close: str,
    ) -> list[str]:
        """The clusters, nested and indented, each with its atoms; then the loose atoms.

        Both text formats nest alike and differ only in syntax: `open_cluster(
        cluster, number, indent)` gives a cluster's first lines (numbers count
        clusters in drawing order), `close` is its last, and `node_line(index,
        indent)` draws one atom.
        """
        lines: list[str] = []
        numbers = itertools.count()

        def emit(cluster: _Cluster, indent: str) -> None:
            lines.extend(open_cluster(cluster, next(numbers), indent))
            lines.extend(node_line(i, indent + "    ") for i in cluster.nodes)
            for child in cluster.children:
                emit(child, indent + "    ")
            lines.append(indent + close)

        if self.root is not None:
            emit(self.root, "    ")
        lines.extend(node_line(i, "    ") for i in self.loose)
        return lines


def _controller_name(ctl: Retry, owner: str) -> str:
    # The compiler names an unnamed controller after what it guards.
    return ctl.name if ctl.explicit_name else f"{owner}.retry"


def _decider_label(spec: DeciderSpec) -> str:
    decider = spec.decider
    name = getattr(decider, "__name__", None) or type(decider).__name__
    if spec.depth is not Depth.ALL:
        name += f" (depth {spec.depth.value})"
    return name


def _picture(flow: Flow | Atom) -> _Picture:
    compiled = compile_flow(flow)
    index = {node.name: node.index for node in compiled.nodes}
    placed: set[int] = set()

    def place(target: list[int], name: str) -> None:
        i = index.get(name)
        if i is not None and i not in placed:
            placed.add(i)
            target.append(i)

    def place_atom(target: list[int], atom: Atom) -> None:
        if atom.retry_controller is not None:
            place(target, _controller_name(atom.retry_controller, atom.name))
        place(target, atom.name)

    def cluster(item: Flow) -> _Cluster:
        made = _Cluster(item.name, item.kind)
        if item.retry is not None:
            place(made.nodes, _controller_name(item.retry, item.name))
        for child in item.items:
            if isinstance(child, Flow):
                made.children.append(cluster(child))
            else:
                place_atom(made.nodes, child)
        return made

    loose: list[int] = []
    root: _Cluster | None = None
    if isinstance(flow, Flow):
        root = cluster(flow)
    else:
        place_atom(loose, flow)
    loose.extend(n.index for n in compiled.nodes if n.index not in placed)

    edges: dict[tuple[int, int], _Edge] = {}

    def edge(a: int, b: int) -> _Edge:
        found = edges.get((a, b))
        if found is None:
            found = edges[(a, b)] = _Edge()
        return found

    for node in compiled.nodes:
        for succ in node.succs:
            edge(node.index, succ).ordered = True
        for arg, cands in zip(node.atom.args, node.cands, strict=False):
            if cands:
                carried = edge(cands[0], node.index).data
                if arg.symbol not in carried:
                    carried.append(arg.symbol)
        for spec in node.deciders or ():
            for source in spec.sources:
                edge(source, node.index).deciders.append(_decider_label(spec))
    return _Picture(compiled, root, loose, edges)


def _state_of(states: Mapping[str, str] | None, name: str) -> str | None:
    if states is None:
        return None
    state = states.get(name)
    return None if state is None else str(state)


# -- Mermaid ---------------------------------------------------------------------------


def _mm(text: str) -> str:
    """Text safe inside a quoted Mermaid label (entity codes for what it parses)."""
    text = text.replace("#", "#35;")
    for char, code in (('"', "#34;"), ("|", "#124;"), ("<", "#60;"), (">", "#62;")):
        text = text.replace(char, code)
    return text


def to_mermaid(flow: Flow | Atom, states: Mapping[str, str] | None = None) -> str:
    """A Mermaid `flowchart` of the flow; with `states`, atoms are coloured by state."""
    pic = _picture(flow)
    nodes = pic.compiled.nodes
    lines = ["flowchart TD"]

    def node_line(i: int, indent: str) -> str:
        node = nodes[i]
        label = _mm(node.name)
        state = _state_of(states, node.name)
        if state is not None:
            label += f"<br/>{_mm(state)}"
        shape = ('["', '"]')
        if node.is_retry:
            shape = ('{{"', '"}}')
        elif node.atom.is_wait:  # a stadium: waits for a signal or a time
            shape = ('(["', '"])')
        elif node.atom.is_pivot:  # a double border: cannot be undone
            shape = ('[["', '"]]')
        return f"{indent}n{i}{shape[0]}{label}{shape[1]}"

    def open_cluster(cluster: _Cluster, number: int, indent: str) -> list[str]:
        return [
            f'{indent}subgraph c{number}["{_mm(cluster.name)} ({cluster.kind})"]',
            f"{indent}    direction TB",
        ]

    lines.extend(pic.body(node_line, open_cluster, "end"))

    for (a, b), e in pic.edges.items():
        if e.deciders:
            label = "◆ " + ", ".join(e.deciders)
            if e.data:
                label += ": " + ", ".join(e.data)
            lines.append(f'    n{a} ==>|"{_mm(label)}"| n{b}')
        elif e.data:
            lines.append(f'    n{a} -->|"{_mm(", ".join(e.data))}"| n{b}')
        else:
            lines.append(f"    n{a} -.-> n{b}")

    if states is not None:
        by_state: dict[str, list[str]] = {}
        for node in nodes:
            state = _state_of(states, node.name)
            if state is not None and state in STATE_COLOURS:
                by_state.setdefault(state, []).append(f"n{node.index}")
        for state, ids in by_state.items():
            fill, stroke = STATE_COLOURS[state]
            dash = ",stroke-dasharray:4 3" if state == "IGNORE" else ""
            lines.append(f"    classDef {state} fill:{fill},stroke:{stroke}{dash}")
            lines.append(f"    class {','.join(ids)} {state}")
    return "\n".join(lines) + "\n"


# -- Graphviz ----------------------------------------------------------------------


def _dq(text: str) -> str:
    """A double-quoted Graphviz string."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def to_dot(flow: Flow | Atom, states: Mapping[str, str] | None = None) -> str:
    """A Graphviz `digraph` of the flow; with `states`, atoms are coloured by state."""
    pic = _picture(flow)
    nodes = pic.compiled.nodes
    lines = [
        f"digraph {_dq(pic.compiled.name)} {{",
        '    graph [fontname="Helvetica", fontsize=11, compound=true, newrank=true];',
        '    node [shape=box, style="rounded,filled", fillcolor="#ffffff", '
        'fontname="Helvetica", fontsize=11];',
        '    edge [fontname="Helvetica", fontsize=9];',
    ]

    def node_line(i: int, indent: str) -> str:
        node = nodes[i]
        attrs = []
        label = node.name
        state = _state_of(states, node.name)
        if state is not None:
            label += f"\n{state}"
        attrs.append(f"label={_dq(label)}")
        if node.is_retry:
            attrs.append("shape=hexagon")
        elif node.atom.is_wait:
            attrs.append("shape=oval")
        elif node.atom.is_pivot:
            attrs.append("peripheries=2")
        colours = STATE_COLOURS.get(state or "")
        if colours is not None:
            attrs.append(f'fillcolor="{colours[0]}", color="{colours[1]}"')
            if state == "IGNORE":
                attrs.append('style="rounded,filled,dashed"')
        return f"{indent}n{i} [{', '.join(attrs)}];"

    def open_cluster(cluster: _Cluster, number: int, indent: str) -> list[str]:
        return [
            f"{indent}subgraph cluster_{number} {{",
            f"{indent}    label={_dq(f'{cluster.name} ({cluster.kind})')};",
            f'{indent}    style="rounded"; color="#9e9e9e";',
        ]

    lines.extend(pic.body(node_line, open_cluster, "}"))

    for (a, b), e in pic.edges.items():
        if e.deciders:
            label = "◆ " + ", ".join(e.deciders)
            if e.data:
                label += "\n" + ", ".join(e.data)
            attrs = f"label={_dq(label)}, style=bold, dir=both, arrowtail=diamond"
        elif e.data:
            attrs = f"label={_dq(', '.join(e.data))}"
        else:
            attrs = 'style=dashed, color="#757575"'
        lines.append(f"    n{a} -> n{b} [{attrs}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


# -- rendering -----------------------------------------------------------------------


def render(flow: Flow | Atom, fmt: str, states: Mapping[str, str] | None = None) -> bytes:
    """The flow as `fmt` (one of FORMATS): UTF-8 text for mermaid/dot, else image bytes.

    svg and png run Graphviz's `dot` (blocking, in a subprocess); a missing
    `dot` or an unknown format raise ConfigurationError.
    """
    if fmt not in FORMATS:
        raise ConfigurationError(
            f"unknown picture format {fmt!r}; choose one of {', '.join(FORMATS)}"
        )
    if fmt == "mermaid":
        return to_mermaid(flow, states).encode()
    text = to_dot(flow, states)
    if fmt == "dot":
        return text.encode()
    dot = shutil.which("dot")
    if dot is None:
        raise ConfigurationError(
            f"rendering {fmt} needs Graphviz's 'dot' program, which is not on PATH "
            f"(Debian: apt-get install graphviz); --format dot or mermaid need nothing"
        )
    try:
        done = subprocess.run(
            [dot, f"-T{fmt}"], input=text.encode(), capture_output=True, timeout=DOT_TIMEOUT
        )
    except subprocess.TimeoutExpired as exc:
        raise ExecutionError(f"dot -T{fmt} did not finish within {DOT_TIMEOUT:g}s") from exc
    if done.returncode != 0:
        why = done.stderr.decode(errors="replace").strip().splitlines()
        raise ExecutionError(
            f"dot -T{fmt} failed (exit {done.returncode}): {why[0] if why else 'no output'}"
        )
    return done.stdout
