"""The demux end to end in one process: gRPC client -> demux server -> vsock stand-in -> in-VM gRPC.

The contract suite runs through the whole chain (namespace in metadata), so codes,
messages, labels and streaming List are forwarded faithfully.
"""

from __future__ import annotations

import pytest

from snapmux.adapters.grpc.server import start_unix_snapshots_server
from snapmux.adapters.vsock.connector import VsockSnapshotterConnector
from snapmux.application.remote_clients import RemoteSnapshotterCache
from snapmux.application.routing import NamespaceRouter
from snapmux.domain.errors import FailedPreconditionError, NotFoundError
from snapmux.domain.model import SnapshotterAddress
from snapmux.domain.namespaces import current_namespace
from tests.contract.snapshot_service import SnapshotServiceContract, listed
from tests.fakes.resolver import InMemoryAddressResolver
from tests.fakes.snapshots import InMemorySnapshotService
from tests.support.firecracker_vsock import FirecrackerVsockStandIn
from tests.support.grpc_client import served_over_grpc

PORT = 10000


class Stack:
    def __init__(self) -> None:
        self.vms: dict[str, InMemorySnapshotService] = {}
        self.closers = []

    async def add_vm(self, folder, namespace: str) -> SnapshotterAddress:
        folder.mkdir()
        service = InMemorySnapshotService(root=f"/{namespace}")
        server = await start_unix_snapshots_server(service, str(folder / "in-vm.sock"))
        vsock = await FirecrackerVsockStandIn(str(folder / "v.sock"), {PORT: str(folder / "in-vm.sock")}).start()
        self.vms[namespace] = service
        self.closers += [vsock.stop, lambda: server.stop(None)]
        return SnapshotterAddress("unix", vsock.uds_path, PORT)


@pytest.fixture
async def demux(tmp_path):
    stack = Stack()
    resolver = InMemoryAddressResolver({
        "vm-a": await stack.add_vm(tmp_path / "a", "vm-a"),
        "vm-b": await stack.add_vm(tmp_path / "b", "vm-b"),
    })
    connector = VsockSnapshotterConnector(timeout=2.0, retry_interval=0.02)
    cache = RemoteSnapshotterCache(resolver, connector)
    async with served_over_grpc(NamespaceRouter(cache, "vm:"), str(tmp_path / "demux.sock"), "demux") as client:
        stack.client = client
        yield stack
    await cache.close()
    await connector.close()
    for close in reversed(stack.closers):
        await close()


class TestContractThroughTheDemux(SnapshotServiceContract):
    @pytest.fixture
    async def snapshots(self, demux):
        current_namespace.set("vm-a")  # sent as containerd-namespace metadata
        return demux.client


async def test_keys_without_metadata_route_by_prefix_and_land_in_one_vm(demux):
    mounts = await demux.client.prepare("vm-b/7/rootfs", "", {"containerd.io/gc.root": "x"})
    assert all(m.type.startswith("vm:") and m.target == "" for m in mounts)
    assert set(demux.vms["vm-b"]._snapshots) == {"vm-b/7/rootfs"} and not demux.vms["vm-a"]._snapshots
    assert dict(demux.vms["vm-b"]._snapshots["vm-b/7/rootfs"].info.labels) == {"containerd.io/gc.root": "x"}


async def test_remote_codes_and_messages_come_back_unchanged(demux):
    with pytest.raises(NotFoundError, match="^snapshot vm-a/1/none: not found$"):
        await demux.client.stat("vm-a/1/none")
    with pytest.raises(FailedPreconditionError, match="namespace is required"):
        await demux.client.stat("no-namespace")


async def test_the_garbage_collectors_walk_sees_every_connected_vm(demux):
    await demux.client.prepare("vm-a/1/x")
    await demux.client.prepare("vm-b/1/y")
    for i in range(150):
        await demux.client.prepare(f"vm-b/2/k{i}")
    assert len(await listed(demux.client)) == 152
    current_namespace.set("vm-a")
    assert set(await listed(demux.client)) == {"vm-a/1/x"}
