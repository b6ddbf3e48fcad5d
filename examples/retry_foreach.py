"""Try a list of values until one works, with the ``ForEach`` retry controller.

A package is downloaded from the first mirror that answers. The controller
guards the ``download`` subflow: before each attempt it provides the next
mirror (as ``mirror``); when a step inside fails, the subflow is reverted and
run again with the next value. The controller's history records every
attempt: the value tried and what failed with it.

The step after the subflow (``install``) sits outside the controller and runs
once, after a successful download.
"""

from __future__ import annotations

import asyncio

import zag_async as zag

MIRRORS = ["mirror-eu.example", "mirror-us.example", "mirror-asia.example", "mirror-au.example"]
DOWN = {"mirror-eu.example": "connection refused", "mirror-us.example": "TLS handshake failed"}


@zag.task(provides="archive")
async def fetch(mirror: str, package: str) -> str:
    print(f"fetch {package} from {mirror}")
    if mirror in DOWN:
        raise ConnectionError(f"{mirror}: {DOWN[mirror]}")
    return f"/tmp/{package}.tar.gz"


@fetch.revert
async def discard_partial(mirror: str, *, result: str | zag.Failure) -> None:
    # Called for each failed attempt before the next mirror is tried.
    print(f"  clean up after {mirror}")


@zag.task(provides="checksum_ok")
async def verify(archive: str) -> bool:
    print(f"verify {archive}")
    return True


@zag.task(provides="installed")
async def install(archive: str, checksum_ok: bool) -> str:
    print(f"install {archive}")
    return "zag-async 0.1.0"


async def main() -> None:
    download = zag.linear(
        "download", fetch, verify, retry=zag.retry.ForEach(MIRRORS, provides="mirror")
    )
    flow = zag.linear("get-package", download, install)
    engine = zag.Engine(flow, store={"package": "zag-async-0.1.0"})
    results = await engine.run()

    print()
    print(f"flow state: {engine.state}")
    print(f"installed: {results['installed']} (from {results['mirror']})")
    # The controller's default name is "<flow name>.retry".
    history = engine.storage.get("download.retry").history
    assert history is not None
    print(f"history ({len(history)} attempts):")
    for number, attempt in enumerate(history, start=1):
        if attempt.failures:
            why = "; ".join(
                f"{atom} raised {failure.exception_type}: {failure.message}"
                for atom, failure in attempt.failures.items()
            )
        else:
            why = "ok"
        print(f"  {number}. {attempt.value}: {why}")
    print(f"fetch was started {engine.storage.get('fetch').attempts} times")


if __name__ == "__main__":
    asyncio.run(main())
