"""Fixtures shared by unit tests.

`vsock`: the Firecracker vsock stand-in with a guest agent (the `guest` unix socket) on
GUEST_PORT. The agent speaks first, as a real one may (its first bytes must follow the
stand-in's `OK` untouched), then echoes; what it says first is the requesting module's
`guest_greeting` fixture.

`demux`: the demux in one process, over two in-memory "VMs" each behind a vsock stand-in.
"""

from __future__ import annotations

import asyncio

import pytest

from snapmux.adapters.grpc.relay_servicer import SnapshotsRelayServicer
from snapmux.adapters.grpc.server import start_unix_snapshots_server
from snapmux.adapters.vsock.connector import VsockSnapshotterConnector
from snapmux.application.remote_clients import RemoteSnapshotterCache
from snapmux.application.routing import NamespaceRouter
from snapmux.domain.model import SnapshotterAddress
from tests.fakes.resolver import InMemoryAddressResolver
from tests.fakes.snapshots import InMemorySnapshotService
from tests.support.firecracker_vsock import FirecrackerVsockStandIn
from tests.support.grpc_client import served_over_grpc

GUEST_PORT = 10000
"""The snapshotter's in-VM port, as in production."""


@pytest.fixture
async def guest(tmp_path, guest_greeting: bytes):
    async def greet_then_echo(reader, writer):
        writer.write(guest_greeting)
        while data := await reader.read(1024):
            writer.write(data)
        writer.close()

    path = str(tmp_path / "guest.sock")
    server = await asyncio.start_unix_server(greet_then_echo, path)
    yield path
    server.close()


@pytest.fixture
async def vsock(tmp_path, guest):
    standin = await FirecrackerVsockStandIn(str(tmp_path / "v.sock"), {GUEST_PORT: guest}).start()
    yield standin
    await standin.stop()


class DemuxStack:
    """Two in-memory "VMs", each behind its own vsock stand-in, and a demux client in front."""

    def __init__(self) -> None:
        self.vms: dict[str, InMemorySnapshotService] = {}
        self.closers = []

    async def add_vm(self, folder, namespace: str) -> SnapshotterAddress:
        folder.mkdir()
        service = InMemorySnapshotService(root=f"/{namespace}")
        server = await start_unix_snapshots_server(service, str(folder / "in-vm.sock"))
        vsock = await FirecrackerVsockStandIn(str(folder / "v.sock"), {GUEST_PORT: str(folder / "in-vm.sock")}).start()
        self.vms[namespace] = service
        self.closers += [vsock.stop, lambda: server.stop(None)]
        return SnapshotterAddress("unix", vsock.uds_path, GUEST_PORT)


@pytest.fixture
async def demux(tmp_path):
    """The demux end to end in one process: client -> demux server (the relay servicer, as the daemon
    serves it) -> vsock stand-in -> in-VM gRPC."""
    stack = DemuxStack()
    resolver = InMemoryAddressResolver({
        "vm-a": await stack.add_vm(tmp_path / "a", "vm-a"),
        "vm-b": await stack.add_vm(tmp_path / "b", "vm-b"),
    })
    connector = VsockSnapshotterConnector(timeout=2.0, retry_interval=0.02)
    cache = RemoteSnapshotterCache(resolver, connector)
    async with served_over_grpc(SnapshotsRelayServicer(NamespaceRouter(cache, "vm:")), str(tmp_path / "demux.sock"), "demux") as client:
        stack.client = client
        yield stack
    await cache.close()
    await connector.close()
    for close in reversed(stack.closers):
        await close()
