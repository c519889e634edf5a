"""The demux's relay over real gRPC: client -> SnapshotsRelayServicer -> router -> GrpcRemoteSnapshotter
-> a "VM" that answers fixed bytes. What crosses is the bytes the caller and the VM sent, unknown
protobuf fields included; only the mounts of a reply are marked (at protobuf level)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import grpc
import pytest

from snapmux.adapters.grpc.convert import SNAPSHOTS_SERVICE
from snapmux.adapters.grpc.relay_servicer import SnapshotsRelayServicer
from snapmux.adapters.grpc.server import start_unix_snapshots_server
from snapmux.adapters.pb.containerd.api.services.snapshots.v1 import snapshots_pb2 as pb
from snapmux.adapters.pb.containerd.api.types import mount_pb2
from snapmux.adapters.vsock.connector import VsockSnapshotterConnector
from snapmux.application.remote_clients import RemoteSnapshotterCache
from snapmux.application.routing import NamespaceRouter
from snapmux.domain.model import SnapshotterAddress
from tests.fakes.resolver import InMemoryAddressResolver

UNKNOWN = b"\x98\x06\x01"
"""Field 99, varint 1: in no message of the snapshots API."""


def with_unknown(message) -> bytes:
    return message.SerializeToString() + UNKNOWN


STAT_REPLY = with_unknown(pb.StatSnapshotResponse(info=pb.Info(name="ns/1/x", parent="ns/0/p", labels={"a": "1"})))
MOUNTS = [mount_pb2.Mount(type="overlay", source="overlay", target="/in/vm", options=["lowerdir=/l"])]
LIST_REPLIES = [with_unknown(pb.ListSnapshotsResponse(info=[pb.Info(name=f"ns/1/{i}")])) for i in range(2)]


class FixedVm(grpc.GenericRpcHandler):
    """A snapshotter that answers each method with fixed bytes and records what it was sent."""

    def __init__(self) -> None:
        self.received: list[tuple[str, bytes, str | None]] = []

    def _record(self, method: str, request: bytes, context) -> None:  # type: ignore[no-untyped-def]
        namespace = dict(context.invocation_metadata() or ()).get("containerd-namespace")
        self.received.append((method.rsplit("/", 1)[1], request, namespace))

    def service(self, details):  # type: ignore[no-untyped-def]
        method = details.method
        if method.endswith("/List"):
            async def stream(request: bytes, context) -> AsyncIterator[bytes]:  # type: ignore[no-untyped-def]
                self._record(method, request, context)
                for reply in LIST_REPLIES:
                    yield reply
            return grpc.unary_stream_rpc_method_handler(stream)

        async def unary(request: bytes, context) -> bytes:  # type: ignore[no-untyped-def]
            self._record(method, request, context)
            if method.endswith("/Remove"):
                await context.abort(grpc.StatusCode.NOT_FOUND, "snapshot ns/1/gone: not found")
            if method.endswith(("/Mounts", "/Prepare", "/View")):
                return with_unknown(pb.MountsResponse(mounts=MOUNTS))
            return STAT_REPLY
        return grpc.unary_unary_rpc_method_handler(unary)


@pytest.fixture
async def relayed(tmp_path):
    """(raw channel to the demux, the VM) for namespace "ns"."""
    vm = FixedVm()
    vm_server = grpc.aio.server(handlers=[vm])
    vm_server.add_insecure_port(f"unix://{tmp_path / 'vm.sock'}")
    await vm_server.start()
    connector = VsockSnapshotterConnector(timeout=2.0)
    cache = RemoteSnapshotterCache(InMemoryAddressResolver({"ns": SnapshotterAddress("unix", str(tmp_path / "vm.sock"))}),
                                   connector)
    demux = await start_unix_snapshots_server(SnapshotsRelayServicer(NamespaceRouter(cache, "vm:")),
                                              str(tmp_path / "demux.sock"))
    channel = grpc.aio.insecure_channel(f"unix://{tmp_path / 'demux.sock'}")
    try:
        yield channel, vm
    finally:
        await channel.close()
        await demux.stop(None)
        await cache.close()
        await connector.close()
        await vm_server.stop(None)


def call(channel, method: str):  # type: ignore[no-untyped-def]
    return channel.unary_unary(f"/{SNAPSHOTS_SERVICE}/{method}")


async def test_request_and_reply_bytes_cross_untouched_unknown_fields_included(relayed):
    channel, vm = relayed
    request = with_unknown(pb.StatSnapshotRequest(snapshotter="demux", key="ns/1/x"))
    assert await call(channel, "Stat")(request) == STAT_REPLY
    assert vm.received == [("Stat", request, None)]


async def test_the_namespace_metadata_goes_on_with_the_bytes(relayed):
    channel, vm = relayed
    request = pb.UsageRequest(key="no-prefix").SerializeToString()
    await call(channel, "Usage")(request, metadata=(("containerd-namespace", "ns"),))
    assert vm.received == [("Usage", request, "ns")]


async def test_each_call_carries_its_own_callers_namespace_or_none(relayed):
    """The VM client keeps the namespace's metadata between calls and the server sets the caller's
    namespace only when one is sent: neither may leak into the next call."""
    channel, vm = relayed
    request = pb.UsageRequest(key="ns/1/x").SerializeToString()
    for metadata in ((("containerd-namespace", "ns"),), None, (("containerd-namespace", "ns"),), None):
        await call(channel, "Usage")(request, metadata=metadata)
    assert [namespace for _, _, namespace in vm.received] == ["ns", None, "ns", None]


async def test_mount_replies_are_marked_at_protobuf_level_keeping_every_other_field(relayed):
    channel, _ = relayed
    marked = with_unknown(pb.MountsResponse(mounts=[
        mount_pb2.Mount(type="vm:overlay", source="overlay", options=["lowerdir=/l"])]))  # no target: it is the VM's
    for method, request in (("Mounts", pb.MountsRequest(key="ns/1/x")),
                            ("Prepare", pb.PrepareSnapshotRequest(key="ns/1/y", labels={"l": "v"})),
                            ("View", pb.ViewSnapshotRequest(key="ns/1/v", parent="ns/1/p"))):
        assert await call(channel, method)(request.SerializeToString()) == marked, method


async def test_each_list_message_crosses_as_the_vm_sent_it(relayed):
    channel, vm = relayed
    request = pb.ListSnapshotsRequest(filters=["kind==committed"]).SerializeToString()
    list_call = channel.unary_stream(f"/{SNAPSHOTS_SERVICE}/List")
    assert [reply async for reply in list_call(request, metadata=(("containerd-namespace", "ns"),))] == LIST_REPLIES
    assert vm.received == [("List", request, "ns")]


async def test_the_vms_code_and_message_cross_unchanged(relayed):
    channel, _ = relayed
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call(channel, "Remove")(pb.RemoveSnapshotRequest(key="ns/1/gone").SerializeToString())
    assert (raised.value.code(), raised.value.details()) == (grpc.StatusCode.NOT_FOUND, "snapshot ns/1/gone: not found")


async def test_a_malformed_request_is_invalid_argument_and_reaches_no_vm(relayed):
    channel, vm = relayed
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call(channel, "Stat")(b"\xff\xff\xff")
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "malformed request" in raised.value.details() and vm.received == []


async def test_routing_reads_the_commit_name_and_the_update_info(relayed):
    channel, vm = relayed
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call(channel, "Commit")(pb.CommitSnapshotRequest(name="other/2/l", key="ns/1/x").SerializeToString())
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "another namespace" in raised.value.details()
    update = pb.UpdateSnapshotRequest(info=pb.Info(name="ns/1/x", labels={"a": "2"})).SerializeToString()
    await call(channel, "Update")(update)
    assert vm.received == [("Update", update, None)]


async def test_the_call_log_reads_key_and_commit_name_from_the_relayed_request(relayed, caplog):
    caplog.set_level(logging.DEBUG, logger="snapmux.calls")
    channel, _ = relayed
    await call(channel, "Commit")(pb.CommitSnapshotRequest(name="ns/2/l", key="ns/1/x").SerializeToString())
    [line] = [r for r in caplog.records if r.name == "snapmux.calls"]
    assert (line.method, line.key, line.commit_name, line.code) == ("Commit", "ns/1/x", "ns/2/l", "OK")
