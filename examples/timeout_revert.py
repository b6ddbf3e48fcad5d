"""A step that takes too long: ``timeout=`` fails it, and the flow reverts.

Provisioning a server: allocate an IP address, create a disk, then ask a
backend to boot the machine. The backend never answers. The boot step has
``timeout=0.2``, so after a fifth of a second the engine cancels it and fails
it with ``zag.errors.AtomTimeout`` (which is also a built-in
``TimeoutError``). From there it is an ordinary failure: the boot step's own
revert runs, then the disk and the IP address are released, newest first,
and the caller gets the ``AtomTimeout``.
"""

from __future__ import annotations

import asyncio

import zag_async as zag


@zag.task(provides="ip")
async def allocate_ip(network: str) -> str:
    print(f"execute allocate_ip on {network}")
    return "10.0.0.7"


@allocate_ip.revert
async def release_ip(*, result: str) -> None:
    print(f"revert  allocate_ip: release {result}")


@zag.task(provides="disk")
async def create_disk(size_gb: int) -> str:
    print(f"execute create_disk: {size_gb} GB")
    return "vol-3f2a"


@create_disk.revert
async def delete_disk(*, result: str) -> None:
    print(f"revert  create_disk: delete {result}")


@zag.task(provides="server", timeout=0.2)
async def boot_server(ip: str, disk: str) -> str:
    print(f"execute boot_server with {ip} and {disk}")
    # A backend that never answers: wait on an event nobody sets.
    await asyncio.Event().wait()
    return "srv-1"


@boot_server.revert
async def abandon_boot(*, result: str | zag.Failure) -> None:
    what = result.exception_type if isinstance(result, zag.Failure) else result
    print(f"revert  boot_server: abandon the request ({what})")


async def main() -> None:
    flow = zag.linear("provision", allocate_ip, create_disk, boot_server)
    engine = zag.Engine(flow, store={"network": "net-a", "size_gb": 20})
    try:
        await engine.run()
    except zag.errors.AtomTimeout as exc:
        print()
        print(f"caught AtomTimeout: {exc}")
        print(f"  timed-out atom: {exc.atom}")
        print(f"  also a TimeoutError: {isinstance(exc, TimeoutError)}")

    print(f"flow state: {engine.state}")
    for name in ("allocate_ip", "create_disk", "boot_server"):
        print(f"  {name}: {engine.storage.get(name).state}")


if __name__ == "__main__":
    asyncio.run(main())
