"""SnapshotService over containerd's snapshots gRPC API: the mirror of the servicer."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import grpc
from google.protobuf.field_mask_pb2 import FieldMask

from snapmux.adapters.grpc import convert
from snapmux.adapters.grpc.errors import NAMESPACE_METADATA_KEY, domain_error_from
from snapmux.adapters.pb.containerd.api.services.snapshots.v1 import snapshots_pb2 as pb
from snapmux.adapters.pb.containerd.api.services.snapshots.v1 import snapshots_pb2_grpc as pb_grpc
from snapmux.domain.deadlines import time_left
from snapmux.domain.model import Info, Mount, Usage
from snapmux.domain.namespaces import current_namespace

T = TypeVar("T")


def _mapped(method: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    @functools.wraps(method)
    async def call(*args: Any, **kwargs: Any) -> T:
        try:
            return await method(*args, **kwargs)
        except grpc.RpcError as error:
            raise domain_error_from(error) from None

    return call


class GrpcSnapshotService:
    """Calls a remote snapshotter; its status codes come back as domain errors."""

    def __init__(self, channel: grpc.aio.Channel, snapshotter: str = "", timeout: float | None = None) -> None:
        self._stub = pb_grpc.SnapshotsStub(channel)
        self._snapshotter = snapshotter
        self._timeout = timeout
        self._metadata: tuple[str | None, grpc.aio.Metadata | None] = (None, None)

    def _options(self) -> dict[str, Any]:
        return {"timeout": time_left(self._timeout), "metadata": self._metadata_of(current_namespace.get())}

    def _metadata_of(self, namespace: str | None) -> grpc.aio.Metadata | None:
        """The namespace's metadata, built again only when it changes (a VM's client mostly calls for
        one): grpc.aio checks a tuple against typing.Sequence and copies it into a Metadata per call."""
        if namespace != self._metadata[0]:
            self._metadata = (namespace, grpc.aio.Metadata((NAMESPACE_METADATA_KEY, namespace)) if namespace else None)
        return self._metadata[1]

    @_mapped
    async def stat(self, key: str) -> Info:
        reply = await self._stub.Stat(pb.StatSnapshotRequest(snapshotter=self._snapshotter, key=key), **self._options())
        return convert.info_from_pb(reply.info)

    @_mapped
    async def update(self, info: Info, fieldpaths: Sequence[str] = ()) -> Info:
        request = pb.UpdateSnapshotRequest(snapshotter=self._snapshotter)
        convert.fill_info(request.info, info)
        if fieldpaths:
            request.update_mask.CopyFrom(FieldMask(paths=list(fieldpaths)))
        reply = await self._stub.Update(request, **self._options())
        return convert.info_from_pb(reply.info)

    @_mapped
    async def usage(self, key: str) -> Usage:
        reply = await self._stub.Usage(pb.UsageRequest(snapshotter=self._snapshotter, key=key), **self._options())
        return convert.usage_from_pb(reply)

    @_mapped
    async def mounts(self, key: str) -> list[Mount]:
        reply = await self._stub.Mounts(pb.MountsRequest(snapshotter=self._snapshotter, key=key), **self._options())
        return convert.mounts_from_pb(reply.mounts)

    @_mapped
    async def prepare(self, key: str, parent: str = "", labels: Mapping[str, str] | None = None) -> list[Mount]:
        request = pb.PrepareSnapshotRequest(snapshotter=self._snapshotter, key=key, parent=parent, labels=labels or {})
        reply = await self._stub.Prepare(request, **self._options())
        return convert.mounts_from_pb(reply.mounts)

    @_mapped
    async def view(self, key: str, parent: str = "", labels: Mapping[str, str] | None = None) -> list[Mount]:
        request = pb.ViewSnapshotRequest(snapshotter=self._snapshotter, key=key, parent=parent, labels=labels or {})
        reply = await self._stub.View(request, **self._options())
        return convert.mounts_from_pb(reply.mounts)

    @_mapped
    async def commit(self, name: str, key: str, labels: Mapping[str, str] | None = None) -> None:
        request = pb.CommitSnapshotRequest(snapshotter=self._snapshotter, name=name, key=key, labels=labels or {})
        await self._stub.Commit(request, **self._options())

    @_mapped
    async def remove(self, key: str) -> None:
        await self._stub.Remove(pb.RemoveSnapshotRequest(snapshotter=self._snapshotter, key=key), **self._options())

    async def walk(self, filters: Sequence[str] = ()) -> AsyncIterator[Info]:
        request = pb.ListSnapshotsRequest(snapshotter=self._snapshotter, filters=list(filters))
        try:
            async for reply in self._stub.List(request, **self._options()):
                for info in reply.info:
                    yield convert.info_from_pb(info)
        except grpc.RpcError as error:
            raise domain_error_from(error) from None

    @_mapped
    async def cleanup(self) -> None:
        await self._stub.Cleanup(pb.CleanupRequest(snapshotter=self._snapshotter), **self._options())
