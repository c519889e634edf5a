"""containerd's snapshots gRPC service over any SnapshotService: request -> port -> convert.

Errors are not handled here; `DomainErrorInterceptor` maps them once for all methods.
Replies are filled in place (`convert.fill_*`), so each message is built once; Stat's and
Mounts' are kept serialized, by the identity of what they answer (`_Replies`), and gRPC sends
those bytes as they are (`SERIALIZED`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Hashable, Sequence
from typing import Generic, TypeVar

import grpc
from google.protobuf.empty_pb2 import Empty

from snapmux.adapters.cpu_turns import cpu_turn
from snapmux.adapters.grpc import convert
from snapmux.adapters.grpc.method_wrapping import SnapshotsMethodInterceptor, add_wrapped
from snapmux.adapters.pb.containerd.api.services.snapshots.v1 import snapshots_pb2 as pb
from snapmux.adapters.pb.containerd.api.services.snapshots.v1 import snapshots_pb2_grpc as pb_grpc
from snapmux.domain.model import Info, Mount
from snapmux.domain.ports import SnapshotService

LIST_BATCH_SIZE = 100
"""Infos per List message, as containerd's own snapshots service streams them."""

LIST_MESSAGE_BYTES = 1024 * 1024
"""...unless they are bigger than this together (label maps): well under the 4 MiB a default gRPC client accepts."""


REPLIES_KEPT = 1024
"""Stat and Mounts replies kept (each): the snapshots being read at once, with room to spare."""

SERIALIZED = ("Stat", "Mounts")
"""Methods whose handler answers the reply's bytes (registered without a response serializer):
serializing Stat's Info (timestamps, a label map) again on every call cost about as much as
building it (measured in instructions per call)."""

V = TypeVar("V")
M = TypeVar("M")


class _Replies(Generic[V, M]):
    """Replies built from frozen domain values, kept by the values' identity. The overlay snapshotter
    answers Stat and Mounts from its cache with the same Info and Mount objects until a snapshot
    changes, and a fresh message filled per call cost more than the rest of such a call (measured
    in instructions per call); a port answering with new objects each time only misses. An entry holds the values it is keyed by, so no id is reused while it lives."""

    def __init__(self, build: Callable[[V], M]) -> None:
        self._build = build
        self._kept: dict[Hashable, tuple[V, M]] = {}

    def reply(self, key: Hashable, value: V) -> M:
        known = self._kept.get(key)
        if known is not None:
            return known[1]
        if len(self._kept) >= REPLIES_KEPT:
            self._kept.clear()
        reply = self._build(value)
        self._kept[key] = (value, reply)
        return reply


def _stat_reply(info: Info) -> bytes:
    reply = pb.StatSnapshotResponse()
    convert.fill_info(reply.info, info)
    return reply.SerializeToString()


def _mounts_reply(mounts: tuple[Mount, ...]) -> bytes:
    reply = pb.MountsResponse()
    convert.fill_mounts(reply.mounts, mounts)
    return reply.SerializeToString()


class SnapshotsServicer(pb_grpc.SnapshotsServicer):
    def __init__(self, snapshots: SnapshotService) -> None:
        self._snapshots = snapshots
        self._stats = _Replies(_stat_reply)
        self._mounts = _Replies(_mounts_reply)

    async def Prepare(self, request: pb.PrepareSnapshotRequest, context: grpc.aio.ServicerContext):
        reply = pb.PrepareSnapshotResponse()
        convert.fill_mounts(reply.mounts, await self._snapshots.prepare(request.key, request.parent, dict(request.labels)))
        return reply

    async def View(self, request: pb.ViewSnapshotRequest, context: grpc.aio.ServicerContext):
        reply = pb.ViewSnapshotResponse()
        convert.fill_mounts(reply.mounts, await self._snapshots.view(request.key, request.parent, dict(request.labels)))
        return reply

    async def Mounts(self, request: pb.MountsRequest, context: grpc.aio.ServicerContext):
        mounts = tuple(await self._snapshots.mounts(request.key))
        return self._mounts.reply(tuple(map(id, mounts)), mounts)

    async def Commit(self, request: pb.CommitSnapshotRequest, context: grpc.aio.ServicerContext):
        await self._snapshots.commit(request.name, request.key, dict(request.labels))
        return Empty()

    async def Remove(self, request: pb.RemoveSnapshotRequest, context: grpc.aio.ServicerContext):
        await self._snapshots.remove(request.key)
        return Empty()

    async def Stat(self, request: pb.StatSnapshotRequest, context: grpc.aio.ServicerContext):
        info = await self._snapshots.stat(request.key)
        return self._stats.reply(id(info), info)

    async def Update(self, request: pb.UpdateSnapshotRequest, context: grpc.aio.ServicerContext):
        paths = list(request.update_mask.paths) if request.HasField("update_mask") else []
        reply = pb.UpdateSnapshotResponse()
        convert.fill_info(reply.info, await self._snapshots.update(convert.info_from_pb(request.info), paths))
        return reply

    async def List(
        self, request: pb.ListSnapshotsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ListSnapshotsResponse]:
        """Converted in CPU turns (`cpu_turns`): many concurrent Lists share the loop with every other call."""
        batch: list[Info] = []
        async for info in self._snapshots.walk(list(request.filters)):
            batch.append(info)
            if len(batch) >= LIST_BATCH_SIZE:
                for response in await _converted(batch):
                    yield response
                batch = []
        for response in await _converted(batch):
            yield response

    async def Usage(self, request: pb.UsageRequest, context: grpc.aio.ServicerContext):
        return convert.usage_to_pb(await self._snapshots.usage(request.key))

    async def Cleanup(self, request: pb.CleanupRequest, context: grpc.aio.ServicerContext):
        await self._snapshots.cleanup()
        return Empty()


async def _converted(batch: list[Info]) -> list[pb.ListSnapshotsResponse]:
    if not batch:
        return []
    async with cpu_turn():
        return convert.list_responses(batch, LIST_MESSAGE_BYTES)


def add_snapshots_servicer(
    server: grpc.aio.Server, snapshots: SnapshotService, interceptors: Sequence[SnapshotsMethodInterceptor] = ()
) -> None:
    """Every method's handler wrapped by `interceptors` once, here (`method_wrapping`)."""
    add_wrapped(server, pb_grpc.add_SnapshotsServicer_to_server, SnapshotsServicer(snapshots), interceptors, SERIALIZED)
