"""Issue 14 items 4 and 8 on the command line: listings paged newest first
(`--limit`), help that names the environment variables read, `jobs show` and
`jobs trash` by id prefix, a repeated post with an idempotency key said to be
one, and a changed flow's advice naming a real flag (`--allow-changes`)."""

from __future__ import annotations

import re
from pathlib import Path

from .conftest import cli_env, ok, zag, zag_many


def test_flows_list_is_paged_newest_first(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'f.db'}"
    ids = [
        ok("run", "cli_flows:pipeline", "1", "-s", "start=1", "--backend", url).lines[0].split()[2]
    ]
    ids.append(
        ok("run", "cli_flows:pipeline", "1", "-s", "start=1", "--backend", url).lines[0].split()[2]
    )
    ids.append(
        ok("run", "cli_flows:pipeline", "1", "-s", "start=1", "--backend", url).lines[0].split()[2]
    )
    default, two, everything = zag_many(
        ("flows", "list", "--backend", url),
        ("flows", "list", "--backend", url, "--limit", "2"),
        ("flows", "list", "--backend", url, "--limit", "0"),
    )

    def listed(result_out: str) -> list[str]:
        return re.findall(r"^([0-9a-f-]{36})\s", result_out, re.M)

    assert listed(default.out) == ids[::-1] and not default.err
    assert listed(two.out) == ids[:0:-1]
    assert "2 newest flows shown; --limit N for more, 0 for all" in two.err
    assert listed(everything.out) == ids[::-1] and not everything.err


def test_jobs_list_is_paged_newest_first_and_show_takes_a_prefix(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'board.db'}"
    where = ("--board", url, "--backend", url)
    posted = [
        ok("jobs", "post", "cli_flows:pipeline", "1", "-s", "start=1", *where).lines[0].split()[2]
    ]
    posted.append(
        ok("jobs", "post", "cli_flows:pipeline", "1", "-s", "start=1", *where).lines[0].split()[2]
    )
    posted.append(
        ok("jobs", "post", "cli_flows:pipeline", "1", "-s", "start=1", *where).lines[0].split()[2]
    )
    two, everything, shown, unknown = zag_many(
        ("jobs", "list", "--board", url, "--limit", "2"),
        ("jobs", "list", "--board", url),
        ("jobs", "show", posted[1][:8], *where),
        ("jobs", "show", "zzzz", *where),
    )
    listed = lambda out: re.findall(r"^([0-9a-f-]{36})\s", out, re.M)  # noqa: E731
    assert listed(two.out) == posted[:0:-1]
    assert "2 newest jobs shown" in two.err
    assert listed(everything.out) == posted[::-1] and not everything.err
    assert shown.code == 0, shown.err
    assert re.search(rf"^job\s+{posted[1]}$", shown.out, re.M)
    assert unknown.code == 1
    assert "no job 'zzzz'" in unknown.one_error_line()
    trashed = ok("jobs", "trash", posted[0][:8], "--board", url)
    assert trashed.lines == [f"trashed job {posted[0]}"]


def test_posting_again_with_a_key_says_the_job_was_already_posted(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'board.db'}"
    where = ("jobs", "post", "cli_flows:pipeline", "1", "--board", url, "--backend", url)
    first = ok(*where, "--key", "order-7")
    again = ok(*where, "--key", "order-7")
    job_id = first.lines[0].split()[2]
    assert first.lines[0].startswith(f"posted job {job_id} pipeline flow ")
    assert again.lines[0].startswith(f"job {job_id} pipeline flow ")
    assert again.lines[0].endswith("was already posted with key 'order-7'; nothing new posted")


def test_help_names_the_environment_variables_instead_of_required() -> None:
    for args in (("flows", "list"), ("jobs", "list"), ("jobs", "post"), ("conductor",)):
        text = " ".join(ok(*args, "--help").out.split())
        assert "required" not in text, (args, text)
        if args != ("flows", "list"):
            assert "[env var: ZAG_BOARD]" in text, (args, text)
        if args != ("jobs", "list"):
            assert "env var: ZAG_BACKEND" in text, (args, text)
    missing = zag("jobs", "list")
    assert missing.code == 2
    assert "Missing option '--board' (or set ZAG_BOARD)" in missing.one_error_line()
    from_env = zag("flows", "list", env=cli_env(ZAG_BACKEND="memory://"))
    assert from_env.code == 0, from_env.err


def test_a_changed_flow_advises_a_real_flag(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'f.db'}"
    flow_id = (
        ok("run", "cli_flows:pipeline", "2", "-s", "start=1", "--backend", url).lines[0].split()[2]
    )
    changed = zag("run", "cli_flows:pipeline", "3", "--resume", flow_id, "--backend", url)
    assert changed.code == 2
    line = changed.one_error_line()
    assert "pass --allow-changes" in line and "allow_changes=True" not in line
    allowed = zag(
        "run", "cli_flows:pipeline", "3", "--resume", flow_id, "--allow-changes", "--backend", url
    )
    assert allowed.code == 0, allowed.err
    assert "matching atoms by name" in allowed.err
    alone = zag("run", "cli_flows:pipeline", "--allow-changes")
    assert alone.code == 2 and "only with --resume" in alone.one_error_line()
