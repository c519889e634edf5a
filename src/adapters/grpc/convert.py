"""Protobuf <-> domain conversion for containerd's snapshots API: the only place both meet."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone

from google.protobuf.timestamp_pb2 import Timestamp

from snapmux.adapters.pb.containerd.api.services.snapshots.v1 import snapshots_pb2 as pb
from snapmux.adapters.pb.containerd.api.types import mount_pb2
from snapmux.domain.errors import InvalidArgumentError
from snapmux.domain.model import Info, Kind, Mount, Usage

SNAPSHOTS_SERVICE = pb.DESCRIPTOR.services_by_name["Snapshots"].full_name
"""containerd.services.snapshots.v1.Snapshots: the gRPC service name, as health checks and method paths spell it."""


def _timestamp(when: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(when)
    return stamp


def _datetime(stamp: Timestamp) -> datetime:
    """A timestamp outside what protobuf (and datetime) can represent is the sender's malformed message."""
    try:
        return stamp.ToDatetime(tzinfo=timezone.utc)
    except (ValueError, OverflowError) as error:
        raise InvalidArgumentError(f"invalid timestamp: {error}") from None


def info_to_pb(info: Info) -> pb.Info:
    return pb.Info(
        name=info.name,
        parent=info.parent,
        kind=int(info.kind),
        created_at=_timestamp(info.created),
        updated_at=_timestamp(info.updated),
        labels=dict(info.labels),
    )


def list_responses(infos: Iterable[Info], bytes_per_message: int) -> list[pb.ListSnapshotsResponse]:
    """Infos in as few messages as fit `bytes_per_message` each (one Info alone may be bigger): a
    batch of snapshots with big label maps must not exceed the wire's message size limit."""
    responses: list[pb.ListSnapshotsResponse] = []
    batch: list[pb.Info] = []
    size = 0
    for info in infos:
        message = info_to_pb(info)
        if batch and size + message.ByteSize() > bytes_per_message:
            responses.append(pb.ListSnapshotsResponse(info=batch))
            batch, size = [], 0
        batch.append(message)
        size += message.ByteSize() + 8  # tag and length of the repeated field
    if batch:
        responses.append(pb.ListSnapshotsResponse(info=batch))
    return responses


def info_from_pb(message: pb.Info) -> Info:
    kind = Kind(message.kind) if message.kind in Kind._value2member_map_ else Kind.UNKNOWN
    return Info(
        name=message.name,
        kind=kind,
        parent=message.parent,
        labels=dict(message.labels),
        created=_datetime(message.created_at),
        updated=_datetime(message.updated_at),
    )


def mounts_to_pb(mounts: Iterable[Mount]) -> list[mount_pb2.Mount]:
    return [mount_pb2.Mount(type=m.type, source=m.source, target=m.target, options=list(m.options)) for m in mounts]


def mounts_from_pb(mounts: Iterable[mount_pb2.Mount]) -> list[Mount]:
    return [Mount(m.type, m.source, m.target, tuple(m.options)) for m in mounts]


def usage_to_pb(usage: Usage) -> pb.UsageResponse:
    return pb.UsageResponse(size=usage.size, inodes=usage.inodes)


def usage_from_pb(message: pb.UsageResponse) -> Usage:
    return Usage(size=message.size, inodes=message.inodes)
