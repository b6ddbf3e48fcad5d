"""mkdocs hooks: the guide and the changelog are the repository's own files.

README.md and CHANGELOG.md stay the single source (a test runs the README's
blocks); these hooks put their text into docs/index.md and docs/changelog.md at
build time and point repository-relative links (examples/..., zag_async/...) at
the source tree, which the site does not contain (links into docs/, such as the
screenshots, stay links within the site).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SOURCES = {"index.md": "README.md", "changelog.md": "CHANGELOG.md"}
_LINK = re.compile(r"\]\((?!https?://|#)([^)\s]+)\)")


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    source = SOURCES.get(page.file.src_uri)
    if source is None:
        return markdown
    text = (ROOT / source).read_text(encoding="utf-8")
    tree = str(config["repo_url"]).rstrip("/") + "/blob/main/"

    def point(match: re.Match[str]) -> str:
        target = match.group(1)
        if target.startswith("docs/"):  # in the site too (the screenshots): a site link
            return f"]({target.removeprefix('docs/')})"
        return f"]({tree}{target})"

    return _LINK.sub(point, text)
