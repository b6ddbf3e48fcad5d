"""The README's "Metrics and traces" snippet runs as shown."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_metrics_and_traces_snippet_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Metrics and traces", 1)[1].split("\n## ", 1)[0]
    (snippet,) = re.findall(r"```python\n(.*?)```", section, re.S)
    assert "port=9464" in snippet
    code = snippet.replace("port=9464", "port=0")  # any free port: tests run side by side
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )
    assert out.returncode == 0, out.stderr
    assert "'greeting': 'hello ada'" in out.stdout
    assert re.search(r"scrape http://127\.0\.0\.1:\d+/metrics", out.stdout)
