"""The README's promises: its two opening commands and its quick start run as shown."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_readme_opens_with_exactly_the_two_commands() -> None:
    first_block = re.search(r"```sh\n(.*?)```", README, re.S)
    assert first_block is not None
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines()]
    assert commands == ["./dev demo", "./dev test"]
    assert README.index("```sh") < README.index("## ")  # before any section


def test_ci_runs_the_readme_test_command() -> None:
    assert "./dev test" in (ROOT / ".ci" / "run").read_text()


def test_quick_start_runs() -> None:
    code = re.findall(r"```python\n(.*?)```", README, re.S)[0]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr
    assert "'tracking': 'TRK-1'" in out.stdout


def test_quick_start_failure_refunds_the_charge() -> None:
    # Issue 13: ship's controller gives up with nobody above it; the charge that ran
    # before the failing subflow must be compensated too, not left SUCCESS.
    code = re.findall(r"```python\n(.*?)```", README, re.S)[0]
    assert 'address": ""' in code  # the block runs the failing order itself
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[1:] == ["refunding P-9.5", "order failed: no address to ship to"]


def test_demo_shows_success_revert_and_retry() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "zag_async", "demo"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "flow order: REVERTED" in text
    # the card step failed, then it and the stock reservation were reverted, newest first
    reverted = [line.split()[0] for line in text.splitlines() if line.strip().endswith("REVERTED")]
    assert reverted[:2] == ["charge_card", "reserve_stock"]
    assert "book_courier.retry     RETRYING" in text
    assert "results: tracking='TRK-42'" in text
    # the embedded default is durable: a stopped service's order is finished by the next
    assert "service stopped while booking the courier: flow SUSPENDED" in text
    assert "steps run: reserve_stock x1, charge_card x1, book_courier x2" in text
    assert text.count("flow order: SUCCESS") == 3


def test_jobs_snippet_runs(tmp_path: Path) -> None:
    snippet = next(
        block
        for block in re.findall(r"```python\n(.*?)```", README, re.S)
        if "zag.Conductor" in block
    )
    assert len(snippet.strip().splitlines()) <= 15  # issue 4: producer + conductor in 15 lines
    package = tmp_path / "myapp"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "flows.py").write_text(
        "import zag_async as zag\n\n"
        "@zag.task(provides='done')\n"
        "async def grow(vm: str, size: int) -> str:\n"
        "    return f'{vm}:{size}'\n\n"
        "def resize(vm: str) -> zag.Flow:\n"
        "    return zag.linear('resize', grow.bind(inject={'vm': vm}))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    out = subprocess.run(
        [sys.executable, "-c", snippet],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,  # the snippet's database file (app.db) goes there
    )
    assert out.returncode == 0, out.stderr
    assert "state='SUCCESS'" in out.stdout and "'done': 'web-1:32'" in out.stdout


def test_compensation_section_shows_the_example_as_it_runs() -> None:
    # The README quotes examples/compensation.py's golden output with "..." for the
    # repeated opening lines; everything it does show must be there, in that order.
    section = README[README.index("\n## Compensation\n") :]
    shown = re.search(r"```text\n(.*?)```", section, re.S)
    assert shown is not None
    golden = (ROOT / "examples" / "golden" / "compensation.out").read_text().splitlines()
    position = 0
    for line in shown.group(1).splitlines():
        if line.strip() == "...":
            continue
        assert line in golden[position:], f"not in the golden output (in order): {line!r}"
        position = golden.index(line, position) + 1
