"""containerd's snapshots gRPC service over a SnapshotRelay: the demux's server, bytes in, bytes out.

Each request is parsed only to read what routing needs (key, labels, commit name, filters) and
handed on as the bytes it came as; the reply bytes go back as the VM sent them. A request that
is not valid protobuf never reaches a handler: `DomainErrorInterceptor` wraps the parsing
(`request_deserializer` here) and answers INVALID_ARGUMENT, as for the domain servicer. The
call log reads key and name through `Received`, as it reads them from a parsed request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from snapmux.adapters.grpc.convert import SNAPSHOTS_SERVICE
from snapmux.adapters.pb.containerd.api.services.snapshots.v1 import snapshots_pb2 as pb
from snapmux.domain.ports import SnapshotRelay


class Received:
    """A request as the relay holds it: the bytes it forwards and the message it routes by.
    Attribute reads go to the message (`request.key`, as the call log reads any request)."""

    __slots__ = ("message", "data")

    def __init__(self, message: Any, data: bytes) -> None:
        self.message, self.data = message, data

    def __getattr__(self, name: str) -> Any:
        return getattr(self.message, name)


def _reader(request_type: Any) -> Callable[[bytes], Received]:
    parse = request_type.FromString
    return lambda data: Received(parse(data), data)


def _unary(request_type: Any, call: Callable[[Received], Awaitable[bytes]]) -> grpc.RpcMethodHandler:
    """The handler is a plain function handing back `call`'s awaitable: the wrappers around it (call
    log, error mapping) are the coroutines grpc.aio awaits, and one more frame here was pure cost."""
    return grpc.unary_unary_rpc_method_handler(lambda request, _context: call(request), _reader(request_type))


def _stream(request_type: Any, call: Callable[[Received], AsyncIterator[bytes]]) -> grpc.RpcMethodHandler:
    """As `_unary`: the relay's iterator itself, not an async generator re-yielding it."""
    return grpc.unary_stream_rpc_method_handler(lambda request, _context: call(request), _reader(request_type))


def relay_handlers(relay: SnapshotRelay) -> dict[str, grpc.RpcMethodHandler]:
    """Every method of the snapshots API, each built once: grpc.aio looks them up per call."""
    return {
        "Prepare": _unary(pb.PrepareSnapshotRequest,
                          lambda r: relay.forward_create("Prepare", r.message.key, r.message.labels, r.data)),
        "View": _unary(pb.ViewSnapshotRequest,
                       lambda r: relay.forward_create("View", r.message.key, r.message.labels, r.data)),
        "Mounts": _unary(pb.MountsRequest, lambda r: relay.forward_mounts(r.message.key, r.data)),
        "Commit": _unary(pb.CommitSnapshotRequest,
                         lambda r: relay.forward_commit(r.message.name, r.message.key, r.data)),
        "Remove": _unary(pb.RemoveSnapshotRequest, lambda r: relay.forward("Remove", r.message.key, r.data)),
        "Stat": _unary(pb.StatSnapshotRequest, lambda r: relay.forward("Stat", r.message.key, r.data)),
        "Update": _unary(pb.UpdateSnapshotRequest, lambda r: relay.forward("Update", r.message.info.name, r.data)),
        "List": _stream(pb.ListSnapshotsRequest, lambda r: relay.forward_list(r.message.filters, r.data)),
        "Usage": _unary(pb.UsageRequest, lambda r: relay.forward("Usage", r.message.key, r.data)),
        "Cleanup": _unary(pb.CleanupRequest, lambda r: relay.forward_cleanup(r.data)),
    }


class SnapshotsRelayServicer:
    """What the demux's composition root registers in place of the domain servicer."""

    def __init__(self, relay: SnapshotRelay) -> None:
        self._handlers = relay_handlers(relay)

    def add_to(self, server: grpc.aio.Server) -> None:
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SNAPSHOTS_SERVICE, self._handlers),))
        server.add_registered_method_handlers(SNAPSHOTS_SERVICE, self._handlers)
