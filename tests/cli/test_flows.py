"""`zag-async flows list|show` on SQLite and PostgreSQL, and `flows show --graph`."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from .conftest import ok, zag, zag_many


def durable_runs(db_url: str) -> tuple[str, str]:
    """One flow that succeeds and one that is reverted; returns their ids."""
    good = zag("run", "cli_flows:pipeline", "2", "--store", "start=1", "--backend", db_url)
    bad = zag("run", "cli_flows:failing", "--backend", db_url)
    assert good.code == 0 and bad.code == 1, (good.err, bad.err)
    for result in (good, bad):  # with a database, the flow's id comes first
        assert re.fullmatch(r"flow (pipeline|failing) [0-9a-f-]{36}", result.lines[0]), result.out
    return good.lines[0].split()[2], bad.lines[0].split()[2]


def test_flows_list_and_show(db_url: str, tmp_path: Path) -> None:
    good, bad = durable_runs(db_url)
    # the picture: Mermaid text from PostgreSQL, an SVG file from SQLite
    svg_path = tmp_path / "flow.svg"
    draw = ["--graph"] if db_url.startswith("postgresql") else ["--graph", "--format", "svg"]
    if "svg" in draw:
        draw += ["-o", str(svg_path)]
    listed, reverted, shown, picture = zag_many(
        ("flows", "list", "--backend", db_url),
        ("flows", "list", "--state", "REVERTED", "--state", "FAILURE", "--backend", db_url),
        ("flows", "show", bad, "--backend", db_url),
        ("flows", "show", bad[:8], *draw, "--backend", db_url),  # a unique prefix will do
    )
    for result in (listed, reverted, shown, picture):
        assert result.code == 0, result.err
    # list: a plain table when piped, header first
    assert listed.lines[0].split() == ["FLOW", "NAME", "STATE", "UPDATED", "OWNER"]
    when = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"
    assert re.search(rf"^{good}\s+pipeline\s+SUCCESS\s+{when}", listed.out, re.M)
    assert re.search(rf"^{bad}\s+failing\s+REVERTED\s", listed.out, re.M)
    assert bad in reverted.out and good not in reverted.out

    # show: the flow, then one row per atom with state, attempts, duration and failure
    assert re.match(rf"flow failing {bad} REVERTED \(version \d+\)$", shown.lines[0])
    assert shown.lines[1].split() == ["ATOM", "STATE", "ATTEMPTS", "DURATION", "FAILURE"]
    rows = {line.split()[0]: line for line in shown.lines[2:]}
    assert re.fullmatch(r"prepare\s+REVERTED\s+1\s+\d+\.\dms", rows["prepare"])
    assert re.fullmatch(
        r"boom\s+REVERTED\s+1\s+\d+\.\dms\s+RuntimeError: the boom step always fails", rows["boom"]
    )

    # --graph: the flow's picture, each atom coloured by its stored state
    if "svg" in draw:
        assert f"wrote {svg_path}" in picture.err
        texts = [t.text for t in ET.parse(svg_path).iter("{http://www.w3.org/2000/svg}text")]
        assert {"prepare", "boom", "REVERTED"} <= set(texts)
        fills = {e.get("fill") for e in ET.parse(svg_path).iter("{http://www.w3.org/2000/svg}path")}
        assert "#ffe0b2" in fills  # REVERTED's colour
    else:
        mermaid = picture.out
        assert mermaid.startswith("flowchart TD\n")
        assert '["prepare<br/>REVERTED"]' in mermaid and '["boom<br/>REVERTED"]' in mermaid
        assert "classDef REVERTED fill:#ffe0b2" in mermaid
        assert re.search(r"^ {4}class n0,n1 REVERTED$", mermaid, re.M)


def test_a_flow_without_factory_must_be_named_to_draw_or_resume(tmp_path: Path) -> None:
    # A flow object (no factory) was run: nothing stored says how to rebuild it.
    url = f"sqlite+aiosqlite:///{tmp_path / 'f.db'}"
    first = ok("run", "cli_flows:FLOW", "--store", "start=1", "--backend", url)
    flow_id = first.lines[0].split()[2]
    refused, drawn, not_resumed, resumed = zag_many(
        ("flows", "show", flow_id, "--graph", "--backend", url),
        ("flows", "show", flow_id, "--graph", "--factory", "cli_flows:FLOW", "--backend", url),
        ("run", "--resume", flow_id, "--backend", url),
        ("run", "cli_flows:FLOW", "--resume", flow_id, "--backend", url),
    )
    assert refused.code == 2
    assert "was not started from a factory; pass --factory" in refused.one_error_line()
    assert drawn.code == 0 and '["step2<br/>SUCCESS"]' in drawn.out
    assert not_resumed.code == 2
    assert f"run MODULE:NAME --resume {flow_id}" in not_resumed.one_error_line()
    assert resumed.code == 0 and '"v2": 3' in resumed.out  # already SUCCESS: its results


def test_flows_show_names_what_an_uncompensated_flow_left_unreverted(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'f.db'}"
    ran = zag("run", "cli_flows:uncompensated", "--backend", url)
    assert ran.code == 1, ran.err
    flow_id = ran.lines[0].split()[2]
    assert f"flow uncompensated {flow_id}" in ran.out
    listed, shown = zag_many(
        ("flows", "list", "--state", "UNCOMPENSATED", "--backend", url),
        ("flows", "show", flow_id, "--backend", url),
    )
    assert listed.code == 0 and flow_id in listed.out, listed.err
    assert shown.code == 0, shown.err
    assert re.match(rf"flow uncompensated {flow_id} UNCOMPENSATED \(version \d+\)$", shown.lines[0])
    rows = {line.split()[0]: line for line in shown.lines[2:]}
    assert re.match(r"hold\s+REVERT_FAILURE\s+1\s.*RuntimeError: the hold cannot be", rows["hold"])
    assert shown.lines[-1] == "not reverted: prepare, hold"
