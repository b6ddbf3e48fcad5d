"""Every example in ``examples/`` runs, and prints exactly its golden output.

Each ``examples/NAME.py`` is run as a user would run it (``python
examples/NAME.py`` from the repository root, with the arguments ``ARGS`` gives
it, if any) and its stdout is compared with ``examples/golden/NAME.out``. A
new example without a golden file fails ``test_every_example_has_golden_output``,
so none goes unchecked.

To write or refresh golden files, run this module as a script::

    python tests/test_examples.py            # every example
    python tests/test_examples.py NAME ...   # some of them

then read the diff: a golden file records what the semantics say the output
must be, not merely what the code printed today.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
GOLDEN = EXAMPLES / "golden"
RUN_TIMEOUT = 60.0

NAMES = sorted(path.stem for path in EXAMPLES.glob("*.py"))
#: Arguments some examples are run with (their golden output is for these).
ARGS: dict[str, list[str]] = {
    "expense_approval": ["--timeout", "1"],  # the 2-day approval deadline, shortened
}


def golden_path(name: str) -> Path:
    return GOLDEN / f"{name}.out"


def run_example(name: str) -> subprocess.CompletedProcess[str]:
    """Run one example in a fresh interpreter from the repository root."""
    env = dict(os.environ)
    # Importable even where zag_async is not installed into the interpreter.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONIOENCODING"] = "utf-8"
    return subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py"), *ARGS.get(name, [])],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=RUN_TIMEOUT,
        check=False,
    )


def test_examples_exist() -> None:
    assert NAMES, f"no examples found in {EXAMPLES}"


def test_every_example_has_golden_output() -> None:
    missing = [name for name in NAMES if not golden_path(name).is_file()]
    assert not missing, (
        f"examples without golden output in {GOLDEN}: {', '.join(missing)} "
        f"(generate with `python tests/test_examples.py NAME` and review it)"
    )


def test_no_orphan_golden_files() -> None:
    orphans = sorted(p.name for p in GOLDEN.glob("*.out") if p.stem not in NAMES)
    assert not orphans, f"golden files with no example: {', '.join(orphans)}"


# The subprocess's own timeout must fire before pytest's per-test one. One interpreter
# per example is too slow for the fast suite (-m "not services"): `services` marks them.
@pytest.mark.services
@pytest.mark.timeout(RUN_TIMEOUT + 30)
@pytest.mark.parametrize("name", NAMES)
def test_example_output(name: str) -> None:
    proc = run_example(name)
    assert proc.returncode == 0, (
        f"examples/{name}.py exited with {proc.returncode}\n--- stderr ---\n{proc.stderr}"
    )
    assert proc.stderr == "", f"examples/{name}.py wrote to stderr:\n{proc.stderr}"
    golden = golden_path(name)
    if not golden.is_file():
        pytest.fail(f"examples/{name}.py has no golden output ({golden.relative_to(ROOT)})")
    assert proc.stdout == golden.read_text(encoding="utf-8")


def _write_golden(names: list[str]) -> int:
    GOLDEN.mkdir(exist_ok=True)
    status = 0
    for name in names:
        proc = run_example(name)
        if proc.returncode != 0 or proc.stderr:
            print(f"{name}: exit {proc.returncode}, not written\n{proc.stderr}", file=sys.stderr)
            status = 1
            continue
        golden_path(name).write_text(proc.stdout, encoding="utf-8")
        print(f"wrote {golden_path(name).relative_to(ROOT)}")
    return status


if __name__ == "__main__":
    sys.exit(_write_golden(sys.argv[1:] or NAMES))
