"""The client half of forwarding containerd's snapshots calls as bytes (`SnapshotForwarder`).

The demux passes most calls on as they came: a multicallable without serializers sends the
caller's request bytes and returns the VM's reply bytes, so nothing is decoded into domain
types and encoded again (bench/demux_bench.py measures the difference against a do-nothing
relay). The one reply it changes, the mounts of Prepare/View/Mounts, it changes at protobuf
level: parsed, marked, serialized, every other field (unknown ones too) kept.
"""

from __future__ import annotations

import grpc

from snapmux.adapters.grpc.convert import SNAPSHOTS_SERVICE
from snapmux.adapters.pb.containerd.api.services.snapshots.v1 import snapshots_pb2 as pb

_MOUNT_REPLIES = {
    "Prepare": pb.PrepareSnapshotResponse,
    "View": pb.ViewSnapshotResponse,
    "Mounts": pb.MountsResponse,
}


class RawSnapshotCalls:
    """One bytes-in, bytes-out multicallable per method of the snapshots API on `channel`,
    each built on first use and kept (building one per call would cost more than the call)."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._channel = channel
        self._unary: dict[str, grpc.aio.UnaryUnaryMultiCallable] = {}
        self._stream: dict[str, grpc.aio.UnaryStreamMultiCallable] = {}

    def unary(self, method: str) -> grpc.aio.UnaryUnaryMultiCallable:
        call = self._unary.get(method)
        if call is None:
            call = self._unary[method] = self._channel.unary_unary(f"/{SNAPSHOTS_SERVICE}/{method}")
        return call

    def stream(self, method: str) -> grpc.aio.UnaryStreamMultiCallable:
        call = self._stream.get(method)
        if call is None:
            call = self._stream[method] = self._channel.unary_stream(f"/{SNAPSHOTS_SERVICE}/{method}")
        return call


def vm_local_mounts(method: str, reply: bytes, type_prefix: str) -> bytes:
    """`reply` of `method` (Prepare, View or Mounts) with `type_prefix` before each mount's type
    and no target (the demux's one home of that rule: the target is the VM's); unchanged for ""."""
    if not type_prefix:
        return reply
    message = _MOUNT_REPLIES[method].FromString(reply)
    for mount in message.mounts:
        mount.type = type_prefix + mount.type
        mount.ClearField("target")
    return message.SerializeToString()
