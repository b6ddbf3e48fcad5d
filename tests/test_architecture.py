"""The layers the README's Architecture section describes, checked on the source.

A module may import from its own layer and the layers before it, never from a
later one (lazy imports inside functions and type-only imports included), so the
engine cannot come to depend on job boards, workers or the web glue.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "zag_async"

LAYERS: dict[str, int] = {
    **dict.fromkeys(
        ["errors", "states", "failure", "models", "codec", "events", "backoff", "background"], 1
    ),
    **dict.fromkeys(["atom", "retry", "flow", "factory", "compiler"], 2),
    **dict.fromkeys(["persistence", "storage", "resolver"], 3),
    **dict.fromkeys(
        [
            "execution",
            "compensation",
            "scheduler",
            "calls",
            "bus",
            "waiting",
            "control",
            "engine",
        ],
        4,
    ),
    **dict.fromkeys(
        [
            "jobs",
            "workers",
            "status",
            "inspection",
            "pictures",
            "metrics",
            "telemetry",
            "service",
            "service_config",
            "contrib",
            "cli",
            "demo",
        ],
        5,
    ),
}
TOP = {"__init__", "__main__"}  # the public face may import anything


def top_name(module: Path) -> str:
    """`zag_async/jobs/zkcache.py` -> `jobs`, `zag_async/engine.py` -> `engine`."""
    return module.relative_to(PACKAGE).parts[0].removesuffix(".py")


def imported(module: Path) -> set[str]:
    """The top-level zag_async modules `module` imports (relative or absolute)."""
    tree = ast.parse(module.read_text())
    depth = len(module.relative_to(PACKAGE).parts) - 1  # 0 for zag_async/x.py
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                if node.level <= depth:
                    continue  # inside its own subpackage
                if node.module:
                    found.add(node.module.split(".")[0])
                else:
                    found.update(alias.name for alias in node.names)
            elif node.module and node.module.startswith("zag_async."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("zag_async."):
                    found.add(alias.name.split(".")[1])
    return found


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if top_name(p) not in TOP)


def test_every_module_has_a_layer() -> None:
    assert {top_name(p) for p in MODULES} <= LAYERS.keys()


@pytest.mark.parametrize("module", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_go_one_way(module: Path) -> None:
    own = LAYERS[top_name(module)]
    later = {m for m in imported(module) - TOP if LAYERS.get(m, 0) > own}
    assert not later, f"{module.relative_to(PACKAGE)} (layer {own}) imports from {sorted(later)}"
