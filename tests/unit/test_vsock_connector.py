"""VsockSnapshotterConnector: gRPC through the forwarder and the Firecracker stand-in, faults, close."""

from __future__ import annotations

import asyncio
import os

import pytest

from snapmux.adapters.grpc.server import start_unix_snapshots_server
from snapmux.adapters.vsock.connector import VsockSnapshotterConnector
from snapmux.domain.errors import NotFoundError, UnavailableError
from snapmux.domain.model import Kind, SnapshotterAddress
from tests.contract.snapshot_service import SnapshotServiceContract, listed
from tests.fakes.snapshots import InMemorySnapshotService
from tests.support.firecracker_vsock import FirecrackerVsockStandIn

PORT = 10000


class Vm:
    """An in-VM snapshotter (fake behind real gRPC) reachable through a vsock stand-in."""

    def __init__(self, folder) -> None:
        self.folder = folder
        self.service = InMemorySnapshotService()
        self.grpc_path = str(folder / "in-vm.sock")
        self.vsock = FirecrackerVsockStandIn(str(folder / "v.sock"), {PORT: self.grpc_path})
        self.server = None
        self.address = SnapshotterAddress("unix", self.vsock.uds_path, PORT)

    async def start_snapshotter(self) -> None:
        self.server = await start_unix_snapshots_server(self.service, self.grpc_path)

    async def kill_snapshotter(self) -> None:
        await self.server.stop(None)
        if os.path.exists(self.grpc_path):
            os.unlink(self.grpc_path)


@pytest.fixture
async def vm(tmp_path):
    vm = Vm(tmp_path)
    await vm.vsock.start()
    await vm.start_snapshotter()
    yield vm
    await vm.vsock.stop()
    if vm.server is not None:
        await vm.server.stop(None)


@pytest.fixture
async def connector():
    connector = VsockSnapshotterConnector(timeout=2.0, retry_interval=0.02, ack_timeout=0.5)
    yield connector
    await connector.close()


@pytest.fixture
async def client(vm, connector):
    client = await connector.connect("ns", vm.address)
    yield client
    await client.close()


class TestContractOverVsock(SnapshotServiceContract):
    @pytest.fixture
    async def snapshots(self, client):
        return client


async def test_calls_reach_the_in_vm_snapshotter(client, vm):
    await client.prepare("ns/1/a")
    assert set(vm.service._snapshots) == {"ns/1/a"} and vm.vsock.handshakes == 1


async def test_remote_status_and_message_pass_unchanged(client):
    with pytest.raises(NotFoundError, match="^snapshot nope: not found$"):
        await client.stat("nope")


async def test_a_missing_vsock_socket_fails_at_once_by_name(connector, tmp_path):
    with pytest.raises(UnavailableError, match=r"gone\.sock port 10000: No such file"):
        await connector.connect("ns", SnapshotterAddress("unix", str(tmp_path / "gone.sock"), PORT))


async def test_connect_refused_by_firecracker_is_unavailable_within_the_timeout(connector, vm):
    vm.vsock.refuse = True
    with pytest.raises(UnavailableError, match="within 2s: connection closed before OK"):
        await connector.connect("ns", vm.address)


async def test_a_plain_unix_address_dials_the_snapshotter_directly(connector, vm, tmp_path):
    client = await connector.connect("ns", SnapshotterAddress("unix", vm.grpc_path))
    try:
        await client.prepare("ns/1/a")
        assert set(vm.service._snapshots) == {"ns/1/a"} and vm.vsock.accepted == 0
    finally:
        await client.close()
    with pytest.raises(UnavailableError, match="No such file"):
        await connector.connect("ns", SnapshotterAddress("unix", str(tmp_path / "none.sock")))


async def test_other_networks_are_refused_clearly(connector):
    with pytest.raises(UnavailableError, match="unsupported network 'tcp'"):
        await connector.connect("ns", SnapshotterAddress("tcp", "127.0.0.1:1"))


async def test_a_dropped_stream_fails_the_call_naming_the_vm_then_recovers(client, vm):
    await client.prepare("ns/1/a")
    vm.vsock.drop_connections()
    vm.vsock.refuse = True
    with pytest.raises(UnavailableError) as failure:
        for _ in range(50):  # the channel may need a call to notice the cut
            await client.stat("ns/1/a")
    assert "port 10000" in str(failure.value)
    assert not await client.healthy()
    vm.vsock.refuse = False
    assert await client.healthy()
    assert (await client.stat("ns/1/a")).kind == Kind.ACTIVE


async def test_an_in_vm_snapshotter_restart_is_picked_up_by_the_same_client(client, vm):
    await client.prepare("ns/1/a")
    await vm.kill_snapshotter()
    with pytest.raises(UnavailableError):
        for _ in range(50):
            await client.stat("ns/1/a")
    await vm.start_snapshotter()
    for _ in range(200):
        if await client.healthy():
            break
    assert set(await listed(client)) == {"ns/1/a"}


async def test_close_removes_the_forwarder_and_cuts_the_vm_connection(connector, vm):
    client = await connector.connect("ns", vm.address)
    await client.prepare("ns/1/a")
    forwarding_socket = client._forwarder.path
    assert os.path.exists(forwarding_socket)
    await client.close()
    assert not os.path.exists(forwarding_socket)
    for _ in range(200):
        if not vm.vsock._live:
            break
        await asyncio.sleep(0.01)
    assert not vm.vsock._live


async def test_a_socket_path_is_never_taken_for_a_host_name(connector, monkeypatch, tmp_path):
    """The Go original's grpc.NewClient switch resolved `address` via DNS; a unix path must stay a path."""
    monkeypatch.chdir(tmp_path)
    service = InMemorySnapshotService()
    server = await start_unix_snapshots_server(service, str(tmp_path / "localhost:10000"))
    try:
        client = await connector.connect("ns", SnapshotterAddress("unix", "localhost:10000"))
        await client.prepare("ns/1/a")
        await client.close()
        assert set(service._snapshots) == {"ns/1/a"}
    finally:
        await server.stop(None)


async def test_a_paused_vm_fails_the_health_probe_and_close_fails_its_hung_call_clearly(connector, vm):
    client = await connector.connect("ns", vm.address)
    await client.prepare("ns/1/a")
    vm.vsock.pause()
    hung = asyncio.create_task(client.stat("ns/1/a"))
    assert not await client.healthy()  # the connection is READY, but nothing answers
    await client.close()
    with pytest.raises(UnavailableError, match=r"port 10000: connection closed \(VM unhealthy"):
        await hung
    vm.vsock.resume()
