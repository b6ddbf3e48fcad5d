"""`zag-async graph` and zag_async.pictures: the generated text, checked by structure,
and SVG/PNG files that really render."""

from __future__ import annotations

import re
import struct
import sys
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path
from typing import Any

import pytest

import zag_async as zag
from zag_async.errors import ConfigurationError
from zag_async.pictures import render, to_dot, to_mermaid

from . import cli_flows
from .conftest import cli_env, ok, zag_many
from .conftest import zag as run_cli

SVG = "{http://www.w3.org/2000/svg}"


def mermaid_structure(text: str) -> dict[str, Any]:
    """Clusters (title -> node labels), and edges by kind, from Mermaid text."""
    labels = dict(re.findall(r'^\s*(n\d+)(?:\["|\{\{")(.*?)(?:"\]|"\}\})$', text, re.M))
    clusters: dict[str, list[str]] = {}
    stack: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if m := re.fullmatch(r'subgraph c\d+\["(.*)"\]', line):
            stack.append(m.group(1))
            clusters[m.group(1)] = []
        elif line == "end":
            stack.pop()
        elif m := re.match(r"(n\d+)(\[|\{\{)", line):
            clusters[stack[-1]].append(labels[m.group(1)])
    edges: dict[str, list[tuple[str, str, str]]] = {"data": [], "order": [], "decider": []}
    for a, arrow, label, b in re.findall(
        r'^\s*(n\d+) (-->|-\.->|==>)(?:\|"(.*?)"\|)? (n\d+)$', text, re.M
    ):
        kind = {"-->": "data", "-.->": "order", "==>": "decider"}[arrow]
        edges[kind].append((labels[a], label, labels[b]))
    return {"clusters": clusters, "edges": edges, "hexagons": re.findall(r'\{\{"(.*?)"\}\}', text)}


def test_mermaid_shows_patterns_data_ordering_deciders_and_retries() -> None:
    found = mermaid_structure(to_mermaid(cli_flows.picture()))
    odd = "odd #34;name#34; #124; #60;x#62;"  # quotes, pipes and brackets escaped
    assert found["clusters"] == {
        "outer (linear)": [],
        "inner (graph)": ["a", "b", "c"],
        "tail (unordered)": ["d.retry", "d", odd],
    }
    assert sorted(found["edges"]["data"]) == [
        ("a", "a_out", "b"), ("b", "b_out", "d"), ("c", "c_out", "d")
    ]  # fmt: skip
    assert found["edges"]["decider"] == [("a", "◆ positive: a_out", "c")]
    assert ("d.retry", "", "d") in found["edges"]["order"]  # dashed, unlabelled
    assert ("b", "", odd) in found["edges"]["order"]  # linear order between the two patterns
    assert found["hexagons"] == ["d.retry"]


def test_dot_shows_the_same_structure() -> None:
    text = to_dot(cli_flows.picture())
    assert text.startswith('digraph "outer" {')
    assert len(re.findall(r"subgraph cluster_\d+ \{", text)) == 3
    assert 'label="inner (graph)";' in text and 'label="tail (unordered)";' in text
    assert 'n3 [label="d.retry", shape=hexagon];' in text
    assert 'n5 [label="odd \\"name\\" | <x>"];' in text  # quotes escaped for dot
    assert 'n0 -> n1 [label="a_out"];' in text
    assert 'n0 -> n2 [label="◆ positive\\na_out", style=bold, dir=both, arrowtail=diamond];' in text
    assert 'n3 -> n4 [style=dashed, color="#757575"];' in text


def test_states_colour_atoms() -> None:
    states = {"a": "SUCCESS", "b": "FAILURE", "c": "IGNORE"}
    mermaid = to_mermaid(cli_flows.picture(), states)
    assert 'n1["b<br/>FAILURE"]' in mermaid and 'n3{{"d.retry"}}' in mermaid  # no state: plain
    assert "classDef FAILURE fill:#ffcdd2,stroke:#c62828" in mermaid
    assert "class n2 IGNORE" in mermaid and "stroke-dasharray" in mermaid
    dot = to_dot(cli_flows.picture(), states)
    assert 'n1 [label="b\\nFAILURE", fillcolor="#ffcdd2", color="#c62828"];' in dot
    assert 'style="rounded,filled,dashed"' in dot  # IGNORE


def test_a_lone_atom_and_unknown_formats() -> None:
    assert to_mermaid(cli_flows.add_one) == 'flowchart TD\n    n0["add_one"]\n'
    with pytest.raises(ConfigurationError, match="unknown picture format 'gif'"):
        render(cli_flows.add_one, "gif")
    assert render(zag.linear("x", cli_flows.add_one), "dot").startswith(b'digraph "x"')


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height of a PNG, after checking it decodes (signature, CRCs, pixel data)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"bad CRC in {kind!r}"
        chunks[kind] = chunks.get(kind, b"") + body
        pos += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colour]
    row = 1 + (width * channels * depth + 7) // 8  # filter byte + pixels
    assert len(zlib.decompress(chunks[b"IDAT"])) == height * row
    assert b"IEND" in chunks
    return width, height


def test_the_cli_offers_every_picture_format() -> None:
    from zag_async import cli, pictures

    assert cli.PICTURE_FORMATS == pictures.FORMATS


def test_graph_command_in_every_format(tmp_path: Path) -> None:
    svg_path, png_path = tmp_path / "order.svg", tmp_path / "order.png"
    factory = "examples.cli_factory:order"
    mermaid, dot, svg, png = zag_many(
        ("graph", factory),
        ("graph", factory, "--format", "dot"),
        ("graph", factory, "--format", "svg", "-o", str(svg_path)),
        ("graph", factory, "3", "--format", "png", "--output", str(png_path)),
    )
    for result in (mermaid, dot, svg, png):
        assert result.code == 0, result.err
    found = mermaid_structure(mermaid.out)
    assert found["clusters"]["delivery (graph)"] == [
        "pack", "ship_express", "ship_standard.retry", "ship_standard"
    ]  # fmt: skip
    assert ("pack", "◆ small_parcel: parcel", "ship_express") in found["edges"]["decider"]
    assert ("reserve", "reservation", "pack") in found["edges"]["data"]
    assert dot.out.startswith('digraph "order" {') and dot.out.rstrip().endswith("}")

    texts = {t.text for t in ET.parse(svg_path).iter(f"{SVG}text")}
    atoms = {"reserve", "charge", "email", "pack", "ship_express", "ship_standard.retry"}
    assert atoms <= texts
    assert {"order (linear)", "payment (unordered)", "delivery (graph)"} <= texts
    assert {"reservation", "◆ small_parcel"} <= texts  # edge labels

    width, height = png_size(png_path.read_bytes())
    assert width > 100 and height > 100


def test_svg_to_stdout_through_the_script() -> None:
    out = ok("graph", "cli_flows:pipeline", "2", "--format", "svg", entry="script").out
    root = ET.fromstring(out.encode())
    assert root.tag == f"{SVG}svg"
    assert {"step1", "step2", "v1"} <= {t.text for t in root.iter(f"{SVG}text")}


def test_svg_without_graphviz_says_which_package_to_install() -> None:
    no_dot = cli_env(PATH=str(Path(sys.executable).parent))  # python, but no dot
    result = run_cli("graph", "cli_flows:pipeline", "--format", "svg", env=no_dot)
    assert result.code == 2
    assert "needs Graphviz's 'dot' program" in result.one_error_line()
    assert "apt-get install graphviz" in result.err
    # the text formats need nothing
    assert run_cli("graph", "cli_flows:pipeline", "--format", "dot", env=no_dot).code == 0
