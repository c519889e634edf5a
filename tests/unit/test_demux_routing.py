"""NamespaceRouter on its real path (tests/support/relay_stack.py): a gRPC client -> the relay
servicer -> the router -> gRPC clients of in-memory "VMs". What the router's relay face over fakes
(test_demux_relay_routing.py) and the relay's wire (test_demux_relay_wire.py) do not already show:
a bad metadata namespace, an empty mount prefix, unknown namespaces, a VM that dies and comes back.
The SnapshotService contract through the router: test_demux_grpc.py::TestContractThroughTheDemux."""

from __future__ import annotations

import pytest

from snapmux.application.routing import NamespaceRouter
from snapmux.domain.errors import InvalidArgumentError, NotFoundError, UnavailableError
from snapmux.domain.model import Kind
from snapmux.domain.namespaces import current_namespace
from tests.fakes.snapshots import InMemorySnapshotService
from tests.support.relay_stack import relayed_router


@pytest.fixture
async def stack(tmp_path):
    services = {ns: InMemorySnapshotService(root=f"/{ns}") for ns in ("vm-a", "vm-b")}
    async with relayed_router(tmp_path, services, lambda cache: NamespaceRouter(cache, mount_type_prefix="")) as stack:
        yield stack


async def test_a_malformed_namespace_is_invalid_from_the_key_or_the_metadata(stack):
    with pytest.raises(InvalidArgumentError):
        await stack.client.stat("bad ns!/1/x")
    current_namespace.set("-nope-")  # sent as containerd-namespace metadata
    with pytest.raises(InvalidArgumentError):
        await stack.client.stat("x")
    assert stack.connector.connects == []


async def test_an_empty_prefix_returns_the_vms_mounts_unchanged(stack):
    prepared = await stack.client.prepare("vm-a/1/x")
    assert prepared == await stack.vms["vm-a"].service.mounts("vm-a/1/x")
    assert await stack.client.mounts("vm-a/1/x") == prepared


async def test_an_unknown_namespace_is_not_found(stack):
    with pytest.raises(NotFoundError, match="vm-zzz"):
        await stack.client.prepare("vm-zzz/1/x")


async def test_a_dead_vm_fails_its_calls_only_and_recovers_by_itself(stack):
    await stack.client.prepare("vm-a/1/x")
    await stack.client.prepare("vm-b/1/y")
    await stack.vms["vm-a"].stop()
    with pytest.raises(UnavailableError):
        await stack.client.stat("vm-a/1/x")
    with pytest.raises(UnavailableError):
        await stack.client.stat("vm-a/1/x")  # redial fails too while the VM is down
    assert (await stack.client.stat("vm-b/1/y")).kind == Kind.ACTIVE
    await stack.vms["vm-a"].start()
    assert (await stack.client.stat("vm-a/1/x")).kind == Kind.ACTIVE
    assert stack.connector.connects.count("vm-a") == 3
