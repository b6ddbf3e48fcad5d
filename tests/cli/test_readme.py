"""The README's "Command line" and "Flow pictures" sections: every command in their
```sh blocks runs as shown, and the Mermaid picture there is what `graph` prints.

Commands run in order in one temporary directory, in the same environment
(`export` lines set it). FLOW_ID and JOB_ID stand for the last flow id a `run`
printed and the last job `jobs post` printed. The ZooKeeper board and the
PostgreSQL database are swapped for this test's own; a `conductor` line runs in
the background until it is up, then gets SIGTERM.
A comment saying "exits 1" is the exit code expected.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
from pathlib import Path

from support import eventually_sync

from .conftest import ROOT, SCRIPT, cli_env, ok

README = (ROOT / "README.md").read_text(encoding="utf-8")
SECTIONS = ("## Command line", "## Flow pictures")
README_BOARD = "zookeeper://127.0.0.1:2181/zag"
README_DB = "postgresql+asyncpg://postgres@127.0.0.1/test"


def section(title: str) -> str:
    start = README.index(f"\n{title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end >= 0 else None]


def commands() -> list[str]:
    return [
        line
        for title in SECTIONS
        for block in re.findall(r"```sh\n(.*?)```", section(title), re.S)
        for line in block.splitlines()
        if line.strip()
    ]


def test_the_sections_show_every_command() -> None:
    shown = {" ".join(shlex.split(line, comments=True)[:3]) for line in commands()}
    for command in ("run", "flows list", "flows show", "jobs post", "jobs list", "jobs show",
                    "jobs trash", "conductor", "graph"):  # fmt: skip
        assert any(s.startswith(f"zag-async {command}") for s in shown), command


def test_every_command_runs_as_shown(tmp_path: Path, board_url: str, pg_url: str) -> None:
    assert SCRIPT is not None
    env = cli_env(PATH=os.pathsep.join([str(Path(SCRIPT).parent), os.environ["PATH"]]))
    ids: dict[str, str] = {}
    for line in commands():
        words = shlex.split(line, comments=True)
        words = [w.replace(README_BOARD, board_url).replace(README_DB, pg_url) for w in words]
        if words[0] == "export":
            env.update(dict(w.split("=", 1) for w in words[1:]))
            continue
        words = [re.sub(r"\$(\w+)", lambda m: env[m.group(1)], ids.get(w, w)) for w in words]
        assert words[0] == "zag-async", line
        if words[1] == "conductor":
            run_conductor(words, env, tmp_path)
            continue
        done = subprocess.run(words, cwd=tmp_path, env=env, capture_output=True, text=True)
        expected = 1 if "exits 1" in line else 0
        assert done.returncode == expected, f"{line}\n{done.stdout}\n{done.stderr}"
        assert "Traceback" not in done.stderr
        if m := re.search(r"^flow \S+ ([0-9a-f-]{36})$", done.stdout, re.M):
            ids["FLOW_ID"] = m.group(1)
        if m := re.search(r"^posted job (\S+) ", done.stdout, re.M):
            ids["JOB_ID"] = m.group(1)
    assert (tmp_path / "order.svg").read_text().startswith("<?xml")
    assert (tmp_path / "run.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def run_conductor(words: list[str], env: dict[str, str], tmp_path: Path) -> None:
    log = tmp_path / "conductor.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(words, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        eventually_sync(lambda: "running jobs from" in log.read_text(), what="the conductor up")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, log.read_text()
        assert log.read_text().endswith("conductor stopped\n")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_picture_in_the_readme_is_what_graph_prints() -> None:
    shown = re.findall(r"```mermaid\n(.*?)```", section("## Flow pictures"), re.S)
    assert shown == [ok("graph", "examples.cli_factory:order").out]
