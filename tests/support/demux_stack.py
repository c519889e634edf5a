"""A whole demux stack as one command, for SNAPSHOTTER_CMD-style harnesses (the conformance suite).

    python -m tests.support.demux_stack --root {root} --socket {socket} [--vm NAMESPACE ...]

For each `--vm` namespace (default: `testsuite`, the namespace containerd's test
suite puts in its context and so sends as `containerd-namespace` metadata) it
starts a "microVM": a `cvmfs-snapshotter` on `ROOT/vms/NS/snapshotter.sock` behind a
Firecracker vsock stand-in at `ROOT/vms/NS/v.sock` (guest port 10000). Then the real
`http-address-resolver` with a static map of those, then `demux-snapshotter` listening
on SOCKET with `mount_type_prefix = ""` (the "VMs" are local, the harness mounts the
returned mounts on the host). SIGTERM/SIGINT tears everything down in reverse order.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time
from pathlib import Path

from tests.support.firecracker_vsock import FirecrackerVsockStandIn
from tests.support.resolver import running_resolver
from tests.support.sockets import unix_socket_listening

VSOCK_PORT = 10000
READY_TIMEOUT = 60.0


async def wait_for_socket(path: str, process: asyncio.subprocess.Process, what: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while not unix_socket_listening(path):
        if process.returncode is not None:
            raise RuntimeError(f"{what} exited with {process.returncode} before listening on {path}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not listening on {path} within {READY_TIMEOUT}s")
        await asyncio.sleep(0.05)


async def start(argv: list[str], log: Path, ready: str, what: str) -> asyncio.subprocess.Process:
    with open(log, "ab") as out:
        process = await asyncio.create_subprocess_exec(*argv, stdout=out, stderr=out)
    await wait_for_socket(ready, process, what)
    return process


async def stop(process: asyncio.subprocess.Process, grace: float = 10.0) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), grace)
        except asyncio.TimeoutError:
            process.kill()
            await process.wait()


def demux_config(root: Path, listen: str, resolver_url: str, extra: str = "") -> Path:
    config = root / "demux.toml"
    config.write_text(
        "[snapshotter]\nmount_type_prefix = \"\"\n"
        f"[snapshotter.listener]\naddress = \"{listen}\"\n"
        f"[snapshotter.proxy.address.resolver]\naddress = \"{resolver_url}\"\n"
        "[snapshotter.dialer]\ntimeout = \"10s\"\nretry_interval = \"50ms\"\n" + extra
    )
    return config


async def start_vm(vm: Path, log_level: str, processes: list, standins: list) -> dict[str, str]:
    """A "microVM": cvmfs-snapshotter on vm/snapshotter.sock behind a vsock stand-in on vm/v.sock."""
    vm.mkdir(parents=True, exist_ok=True)
    sock = str(vm / "snapshotter.sock")
    processes.append(await start(
        ["cvmfs-snapshotter", "--root", str(vm / "root"), "--address", sock, "--log-level", log_level],
        vm.parent.parent / "logs" / f"vm-{vm.name}.log", sock, f"cvmfs-snapshotter of {vm.name}"))
    standins.append(await FirecrackerVsockStandIn(str(vm / "v.sock"), {VSOCK_PORT: sock}).start())
    return {"network": "unix", "address": str(vm / "v.sock"), "snapshotter_port": str(VSOCK_PORT)}


async def run(root: Path, listen: str, namespaces: list[str], log_level: str) -> None:
    root.mkdir(parents=True, exist_ok=True)
    logs = root / "logs"
    logs.mkdir(exist_ok=True)
    processes: list[asyncio.subprocess.Process] = []
    demux: asyncio.subprocess.Process | None = None
    standins: list[FirecrackerVsockStandIn] = []
    with contextlib.ExitStack() as resolvers:
        try:
            addresses = {}
            for namespace in namespaces:
                addresses[namespace] = await start_vm(root / "vms" / namespace, log_level, processes, standins)
            resolver = resolvers.enter_context(running_resolver(root / "resolver", static=addresses))
            config = demux_config(root, listen, resolver.url)
            demux = await start(
                ["demux-snapshotter", "--config", str(config), "--log-level", log_level],
                logs / "demux.log", listen, "demux-snapshotter")
            await _until_signalled()
        finally:
            if demux is not None:
                await stop(demux)  # first: it drains in-flight calls, then closes its VM clients
            for standin in standins:
                await standin.stop()
            for process in processes:
                await stop(process)


async def _until_signalled() -> None:
    stop_event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop_event.set)
    await stop_event.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True)
    parser.add_argument("--socket", required=True)
    parser.add_argument("--vm", action="append", help="a namespace with its own microVM (repeatable)")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args()
    try:
        asyncio.run(run(Path(args.root), os.path.abspath(args.socket), args.vm or ["testsuite"], args.log_level))
    except (RuntimeError, TimeoutError) as error:
        print(f"demux_stack: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
