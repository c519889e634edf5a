"""TtrpcClient and the firecracker-control backend against a fake ttrpc server speaking real frames."""

from __future__ import annotations

import asyncio

import pytest

from snapmux.adapters.pb.ttrpc import ttrpc_pb2
from snapmux.adapters.resolver.firecracker_control import FirecrackerControlAddressResolver
from snapmux.adapters.ttrpc.client import TtrpcClient
from snapmux.adapters.ttrpc.frames import MAX_MESSAGE, FrameError, encode_frame, read_frame
from snapmux.domain.errors import DeadlineExceededError, InvalidArgumentError, NotFoundError, UnavailableError
from tests.contract.address_resolver import AddressResolverContract
from tests.fakes.ttrpc_server import FakeTtrpcControlServer

VMS = {"vm-a": "/var/lib/fc/default#vm-a/firecracker.vsock", "vm-b": "/var/lib/fc/default#vm-b/firecracker.vsock"}


@pytest.fixture
async def control(tmp_path):
    server = await FakeTtrpcControlServer(str(tmp_path / "containerd.sock.ttrpc"), dict(VMS)).start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def client(control):
    client = TtrpcClient(control.path, timeout=0.5)
    try:
        yield client
    finally:
        await client.close()


class TestFirecrackerControlContract(AddressResolverContract):
    def expected_address(self, namespace):
        return VMS[namespace]

    @pytest.fixture
    async def resolver(self, client):
        return FirecrackerControlAddressResolver(client, snapshotter_port=10000, metrics_port=10001)


async def test_frames_round_trip_and_refuse_oversize():
    reader = asyncio.StreamReader()
    reader.feed_data(encode_frame(7, 2, b"abc", flags=1))
    reader.feed_eof()
    assert tuple(await read_frame(reader)) == (7, 2, 1, b"abc")
    with pytest.raises(FrameError):
        encode_frame(1, 1, b"x" * (MAX_MESSAGE + 1))


async def test_call_carries_service_method_namespace_and_deadline(control, client):
    resolver = FirecrackerControlAddressResolver(client)
    address = await resolver.resolve("vm-a")
    got = control.received[-1]
    assert (address.network, address.address, address.snapshotter_port, address.metrics_port) == (
        "unix", VMS["vm-a"], 10000, 10001)
    assert (got.service, got.method, got.vmid) == ("Firecracker", "GetVMInfo", "vm-a")
    assert got.metadata == {"containerd-namespace": "vm-a", "containerd-namespace-ttrpc": "vm-a"}
    assert got.timeout_nano == 500_000_000


async def test_calls_share_one_connection_with_odd_increasing_stream_ids(control, client):
    resolver = FirecrackerControlAddressResolver(client)
    await asyncio.gather(*(resolver.resolve("vm-a") for _ in range(3)))
    await resolver.resolve("vm-b")
    assert sorted(r.stream_id for r in control.received) == [1, 3, 5, 7] and control.connections == 1


async def test_unknown_vm_is_not_found(client):
    with pytest.raises(NotFoundError, match="not found"):
        await FirecrackerControlAddressResolver(client).resolve("nope")


async def test_unknown_method_maps_through_the_error_table(client):
    with pytest.raises(Exception) as raised:
        await client.call("Firecracker", "Nope", b"")
    assert type(raised.value).__name__ == "UnimplementedError"


async def test_unreachable_socket_is_unavailable(tmp_path):
    client = TtrpcClient(str(tmp_path / "missing.sock"), timeout=0.5)
    with pytest.raises(UnavailableError, match="cannot connect"):
        await FirecrackerControlAddressResolver(client).resolve("vm-a")


@pytest.mark.parametrize("mode", ["garbage-frame", "garbage-payload", "oversized", "wrong-type", "hang-up"])
async def test_misbehaving_server_is_unavailable_and_the_client_recovers(control, client, mode):
    resolver = FirecrackerControlAddressResolver(client)
    control.mode = mode
    with pytest.raises(UnavailableError):
        await resolver.resolve("vm-a")
    control.mode = "normal"
    assert (await resolver.resolve("vm-a")).address == VMS["vm-a"]


async def test_silent_server_is_deadline_exceeded(control, client):
    control.mode = "silent"
    with pytest.raises(DeadlineExceededError):
        await FirecrackerControlAddressResolver(client).resolve("vm-a")


async def test_oversized_request_is_refused_before_sending(control, client):
    with pytest.raises(InvalidArgumentError):
        await client.call("Firecracker", "GetVMInfo", b"x" * (MAX_MESSAGE + 1))
    assert control.received == []


async def test_empty_vsock_path_is_unavailable(control, client):
    control.vms["vm-a"] = ""
    with pytest.raises(UnavailableError, match="VSockPath"):
        await FirecrackerControlAddressResolver(client).resolve("vm-a")


async def test_status_without_error_code_returns_payload(tmp_path):
    path = str(tmp_path / "ok.sock")

    async def serve(reader, writer):
        frame = await read_frame(reader)
        answer = ttrpc_pb2.Response(status=ttrpc_pb2.Status(code=0), payload=b"")
        writer.write(encode_frame(frame.stream_id, 2, answer.SerializeToString()))
        await writer.drain()

    server = await asyncio.start_unix_server(serve, path)
    client = TtrpcClient(path, timeout=1.0)
    try:
        assert await client.call("S", "M", b"") == b""
    finally:
        await client.close()
        server.close()
