"""`zag-async flows cancel|suspend FLOW_ID`: a waiting flow cancelled from the shell is
reverted when resumed; refusals are one clear line."""

from __future__ import annotations

from .conftest import ok, zag, zag_many
from .test_signal import waiting_flow


def test_cancel_from_the_shell_reverts_the_flow_when_resumed(sqlite_url: str) -> None:
    flow_id = waiting_flow(sqlite_url)
    asked = ok("flows", "cancel", flow_id[:8], "--reason", "not needed", "--backend", sqlite_url)
    assert asked.out.strip() == f"cancel of flow {flow_id} requested"
    resumed = zag("run", "--resume", flow_id, "--backend", sqlite_url)
    assert resumed.code == 1
    assert "cancelled by cli: not needed" in resumed.err
    shown = ok("flows", "show", flow_id, "--backend", sqlite_url)
    assert "REVERTED" in shown.out


def test_refused_requests_are_one_line(sqlite_url: str) -> None:
    flow_id = waiting_flow(sqlite_url)
    unknown, waiting, no_backend = zag_many(
        ("flows", "cancel", "no-such-flow", "--backend", sqlite_url),
        ("flows", "suspend", flow_id, "--backend", sqlite_url),
        ("flows", "suspend", flow_id),
    )
    assert unknown.code == 1
    assert "no flow 'no-such-flow', nor one whose id starts with it" in unknown.one_error_line()
    assert waiting.code == 1
    assert "nothing runs" in waiting.one_error_line()
    assert no_backend.code == 2
