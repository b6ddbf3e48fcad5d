"""Reading stored flows back for people: one row per atom, a text table, and
the arguments each atom resolves to.

detail = await backend.load_flow(flow_id)
print(zag.inspection.format_flow(detail))
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any

from .atom import Atom
from .compensation import unreverted_of
from .compiler import compile_flow
from .factory import FactoryRef
from .failure import error_text
from .flow import Flow
from .models import AtomDetail, FlowDetail
from .resolver import Resolver
from .states import AtomState

__all__ = ["AtomReport", "Inputs", "atom_inputs", "describe_flow", "format_flow"]

logger = logging.getLogger("zag_async")


@dataclass(frozen=True, slots=True)
class AtomReport:
    """What a person wants to know about one atom of a stored flow."""

    name: str
    kind: str
    state: str
    intention: str
    attempts: int
    duration: float | None
    failure: str | None  #: "Type: message" of the execute failure, if any
    revert_failure: str | None
    retries: int | None  #: retry controllers: attempts recorded in the history


def describe_flow(detail: FlowDetail) -> list[AtomReport]:
    """One report per atom, in the order the atoms were recorded."""
    rows = []
    for atom in detail.atoms.values():
        rows.append(
            AtomReport(
                name=atom.name,
                kind=atom.kind,
                state=str(atom.state),
                intention=str(atom.intention),
                attempts=atom.attempts,
                duration=atom.duration,
                failure=None if atom.failure is None else error_text(atom.failure),
                revert_failure=(
                    None if atom.revert_failure is None else error_text(atom.revert_failure)
                ),
                retries=None if atom.history is None else len(atom.history),
            )
        )
    return rows


def format_flow(detail: FlowDetail, *, durations: bool = True) -> str:
    """A plain-text table of the flow and its atoms."""
    head = f"flow {detail.name!r} {detail.uuid} {detail.state} (version {detail.version})"
    rows = [("ATOM", "STATE", "ATTEMPTS", "DURATION", "FAILURE")]
    for r in describe_flow(detail):
        duration = "" if r.duration is None or not durations else f"{r.duration * 1000:.1f} ms"
        problem = r.revert_failure or r.failure or ""
        rows.append((r.name, r.state, str(r.attempts), duration, problem))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [head]
    left = unreverted_of(detail)
    if left:
        lines.append(f"  not reverted: {', '.join(left)}")
    for row in rows:
        cells = [row[i].ljust(widths[i]) for i in range(4)] + [row[4]]
        lines.append("  " + "  ".join(cells).rstrip())
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class Inputs:
    """Each atom's arguments as they resolve from a stored flow, or why they cannot.

    `values[atom][param]` is the value (an atom whose stored inputs cannot be
    read is left out); `missing[atom]` names the parameters that no provider
    that succeeded, nor the store, holds (say, the atom has not run yet).
    `unknown` is set, and both maps empty, when the flow cannot be rebuilt here.
    """

    values: dict[str, dict[str, Any]] = field(default_factory=dict)
    missing: dict[str, list[str]] = field(default_factory=dict)
    unknown: str | None = None


_UNDONE = (AtomState.REVERTING, AtomState.REVERTED, AtomState.REVERT_FAILURE)


def _as_provided(atom: AtomDetail) -> AtomDetail:
    """The atom as its consumers saw it: one reverted after it succeeded as SUCCESS."""
    if atom.state in _UNDONE and atom.failure is None:
        return replace(atom, state=AtomState.SUCCESS)
    return atom


def atom_inputs(detail: FlowDetail, *, flow: Flow | Atom | None = None) -> Inputs:
    """The arguments each atom of a stored flow was (or will be) called with, read
    without running anything.

    The flow (`flow`, or else rebuilt from the factory saved in its meta, which runs
    that factory: pass `flow` where the record is not trusted) is compiled, and each
    atom's arguments are resolved from the stored results and store the way the
    engine resolves them (the nearest provider that succeeded, else the store,
    else the parameter's default). A provider that succeeded and was reverted
    since still counts: its consumers ran with its result, which is kept.
    """
    saved = detail.meta.get("factory")
    if flow is None and not saved:
        return Inputs(unknown="the flow was not started from a factory")
    try:
        if flow is None:
            flow = FactoryRef.from_dict(saved or {}).build()
        compiled = compile_flow(flow)
    except Exception as exc:  # a user's factory: anything may go wrong rebuilding it
        logger.debug("flow %s cannot be rebuilt: %s", detail.uuid, exc)
        return Inputs(unknown="the flow's factory cannot be loaded here")
    stored = detail.meta.get("fingerprint")
    if stored is not None and stored != compiled.fingerprint():
        return Inputs(unknown="the flow's code changed since it ran")
    details = [_as_provided(detail.atoms.get(n.name) or AtomDetail(n.name)) for n in compiled.nodes]
    resolver = Resolver(compiled.nodes, details, compiled.providers, detail.store)
    values: dict[str, dict[str, Any]] = {}
    missing: dict[str, list[str]] = {}
    for node in compiled.nodes:
        try:
            found = resolver.arguments(node.index, node.atom.args, node.cands, optional=True)
        except Exception as exc:  # a stored result the atom's `provides` cannot pick from
            logger.debug("flow %s: inputs of %r not read: %s", detail.uuid, node.name, exc)
            continue
        values[node.name] = found
        absent = [a.param for a in node.atom.args if a.param not in found]
        if absent:
            missing[node.name] = absent
    return Inputs(values, missing)
