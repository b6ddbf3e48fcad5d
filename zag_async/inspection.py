"""Reading stored flows back for people: one row per atom, and a text table.

detail = await backend.load_flow(flow_id)
print(zag.inspection.format_flow(detail))
"""

from __future__ import annotations

from dataclasses import dataclass

from .compensation import unreverted_of
from .failure import error_text
from .models import FlowDetail

__all__ = ["AtomReport", "describe_flow", "format_flow"]


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
