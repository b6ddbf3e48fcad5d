"""The UI works offline: its stylesheet and script ship in the wheel, and nothing it
serves points at another host (no CDN, no web font, no Node build step; the SVG
namespace is a name, not a fetch)."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "zag_async" / "contrib" / "ui" / "static"


def test_the_wheel_carries_every_asset(tmp_path: Path) -> None:
    build = [sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(tmp_path)]
    subprocess.run(build, cwd=ROOT, check=True, capture_output=True, timeout=120)
    (wheel,) = tmp_path.glob("zag_async-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"zag_async/contrib/ui/static/{p.name}" for p in STATIC.iterdir() if p.is_file()}
    assert shipped and shipped <= names
    assert {"zag_async/contrib/ui/static/ui.css", "zag_async/contrib/ui/static/ui.js"} <= names


def test_nothing_served_points_at_another_host() -> None:
    sources = [*STATIC.iterdir(), *(ROOT / "zag_async" / "contrib" / "ui").glob("*.py")]
    for path in sources:
        text = path.read_text(encoding="utf-8").replace("http://www.w3.org/2000/svg", "")
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", text), path
        assert "@import" not in text and "url(" not in text, path
