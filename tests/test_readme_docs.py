"""Issue 14 item 7: the documentation site (mkdocs, API reference from the docstrings)
builds with warnings as errors, and CI builds it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ci_builds_the_docs_strictly() -> None:
    assert "nox -s docs" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    noxfile = (ROOT / "noxfile.py").read_text(encoding="utf-8")
    assert 'session.run("mkdocs", "build", "--strict"' in noxfile


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    site = tmp_path / "site"
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    guide = (site / "index.html").read_text(encoding="utf-8")
    assert "Quick start" in guide and "Durability" in guide  # the README is the guide
    assert "Keep a Changelog" in (site / "changelog" / "index.html").read_text(encoding="utf-8")
    reference = (site / "api" / "service" / "index.html").read_text(encoding="utf-8")
    assert "http_status" in reference and "ZagService" in reference  # from the docstrings
    assert not (site / "hooks.py").exists()
