"""The demux end to end in one process (the `demux` fixture, see conftest): gRPC client -> demux
server -> vsock stand-in -> in-VM gRPC.

The contract suite runs through the whole chain (namespace in metadata), so codes,
messages, labels and streaming List are forwarded faithfully.
"""

from __future__ import annotations

import pytest

from snapmux.domain.errors import FailedPreconditionError, NotFoundError
from snapmux.domain.namespaces import current_namespace
from tests.contract.snapshot_service import SnapshotServiceContract, listed

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
