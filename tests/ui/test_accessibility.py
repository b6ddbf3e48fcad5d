"""Accessibility basics of the pages, checked on what the server sends: a language,
a label for every form control, captions and header scopes on tables, alt text on
the picture, and WCAG AA contrast (4.5:1) for every colour pair in ui.css."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

from .conftest import Client, Stored

CSS = (
    Path(__file__).resolve().parents[2] / "zag_async" / "contrib" / "ui" / "static" / "ui.css"
).read_text(encoding="utf-8")


class Page(HTMLParser):
    """Collects the controls, labels, tables and images of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.lang = ""
        self.controls: list[str] = []
        self.labelled: set[str] = set()
        self.tables = self.captions = 0
        self.headers: list[str | None] = []
        self.images: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "html":
            self.lang = a.get("lang") or ""
        elif tag in ("input", "select", "textarea") and a.get("type") != "hidden":
            self.controls.append(a.get("id") or "")
        elif tag == "label":
            self.labelled.add(a.get("for") or "")
        elif tag == "table":
            self.tables += 1
        elif tag == "caption":
            self.captions += 1
        elif tag == "th":
            self.headers.append(a.get("scope"))
        elif tag == "img":
            self.images.append(a.get("alt"))


def parsed(text: str) -> Page:
    page = Page()
    page.feed(text)
    return page


async def test_the_pages_are_labelled(client: Client, stored: Stored) -> None:
    async with client(actions=True, token="t-123456") as http:
        bearer = {"Authorization": "Bearer t-123456"}
        texts = [
            (await http.get("/zag/flows")).text,
            (await http.get(f"/zag/flows/{stored.waiting}", headers=bearer)).text,
            (await http.get(f"/zag/flows/{stored.failed}")).text,
            (await http.get("/zag/login")).text,
            (await http.get("/zag/summary")).text,
        ]
    controls = 0
    for text in texts:
        page = parsed(text)
        assert page.lang == "en"
        assert set(page.controls) <= page.labelled, page.controls
        assert page.tables == page.captions
        assert all(scope in ("col", "row") for scope in page.headers)
        assert all(alt for alt in page.images)
        controls += len(page.controls)
    assert controls >= 6  # filters, signal form, login: all looked at


def luminance(colour: str) -> float:
    def channel(c: int) -> float:
        s = c / 255
        return s / 12.92 if s <= 0.03928 else ((s + 0.055) / 1.055) ** 2.4

    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)


def contrast(a: str, b: str) -> float:
    hi, lo = sorted((luminance(a), luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_every_colour_pair_meets_wcag_aa() -> None:
    pairs = []
    for selector, body in re.findall(r"([^{}]+)\{([^}]*)\}", CSS):
        background = re.search(r"background:\s*(#[0-9a-f]{6})", body)
        colour = re.search(r"(?<![-\w])color:\s*(#[0-9a-f]{6})", body)
        if background and colour:
            pairs.append((selector.strip(), colour.group(1), background.group(1)))
    assert len(pairs) >= 4  # the state badges
    for selector, fg, bg in pairs:
        assert contrast(fg, bg) >= 4.5, (selector, fg, bg, round(contrast(fg, bg), 2))
    # the page text and links on white
    assert contrast("#1b1b1b", "#ffffff") >= 4.5 and contrast("#0645ad", "#ffffff") >= 4.5
    assert contrast("#ffffff", "#1d2b3a") >= 4.5  # the header's links
