"""A graph flow: the order comes from what each step needs and gives.

A small build: fetch the sources, configure, compile two modules, link them,
run the tests and package the result. The steps are added to the graph in a
deliberately scrambled order; zag infers the edges from parameter names
(requires) and ``provides``, so ``link`` waits for both compile steps and
``package`` waits for ``link`` and ``run_tests``.

The two compile steps do not depend on each other, so they run at the same
time and may finish in either order. The output therefore shows the build in
stages (steps of one stage may run together) and checks the order the steps
actually finished in against the inferred dependencies, rather than printing
that order itself.
"""

from __future__ import annotations

import asyncio

import zag_async as zag

finished: list[str] = []


@zag.task(provides="sources")
async def fetch_sources(repo: str) -> str:
    finished.append("fetch_sources")
    return f"{repo}@main"


@zag.task(provides="config")
async def configure(sources: str, build_type: str = "release") -> dict[str, str]:
    finished.append("configure")
    return {"build_type": build_type, "cc": "cc"}


@zag.task(provides="core_obj")
async def compile_core(sources: str, config: dict[str, str]) -> str:
    finished.append("compile_core")
    return f"core.o ({config['build_type']})"


@zag.task(provides="cli_obj")
async def compile_cli(sources: str, config: dict[str, str]) -> str:
    finished.append("compile_cli")
    return f"cli.o ({config['build_type']})"


@zag.task(provides="binary")
async def link(core_obj: str, cli_obj: str) -> str:
    finished.append("link")
    return "zag-build"


@zag.task(provides="test_report")
async def run_tests(binary: str) -> str:
    finished.append("run_tests")
    return "42 passed"


@zag.task(provides="artifact")
async def package(binary: str, test_report: str) -> str:
    finished.append("package")
    return f"{binary}.tar.gz"


STEPS = (package, link, compile_cli, run_tests, configure, fetch_sources, compile_core)


def stages() -> list[list[str]]:
    """Group the steps by how many steps must finish before each can start."""
    provider = {symbol: atom for atom in STEPS for symbol in atom.provided}
    depth: dict[str, int] = {}

    def depth_of(atom: zag.Atom) -> int:
        if atom.name not in depth:
            inputs = [provider[s] for s in atom.requires if s in provider]
            depth[atom.name] = 1 + max((depth_of(p) for p in inputs), default=0)
        return depth[atom.name]

    grouped: dict[int, list[str]] = {}
    for atom in STEPS:
        grouped.setdefault(depth_of(atom), []).append(atom.name)
    return [sorted(grouped[level]) for level in sorted(grouped)]


def check_order(order: list[str]) -> bool:
    """True if every step finished after all the steps that provide its inputs."""
    provider = {symbol: atom.name for atom in STEPS for symbol in atom.provided}
    position = {name: i for i, name in enumerate(order)}
    for atom in STEPS:
        for symbol in atom.requires:
            source = provider.get(symbol)
            if source is not None and position[source] > position[atom.name]:
                return False
    return True


async def main() -> None:
    flow = zag.graph("build", *STEPS)  # no explicit links: all edges are inferred
    results = await zag.run(flow, store={"repo": "git://example/zag"})

    print("build stages (inferred from requires/provides):")
    for number, names in enumerate(stages(), start=1):
        print(f"  {number}. {' + '.join(names)}")
    print(f"steps finished: {len(finished)} of {len(STEPS)}")
    print(f"each finished after the steps it needs: {check_order(finished)}")
    print()
    for name in ("sources", "config", "core_obj", "cli_obj", "binary", "test_report", "artifact"):
        print(f"{name:>11} = {results[name]!r}")


if __name__ == "__main__":
    asyncio.run(main())
