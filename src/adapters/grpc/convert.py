"""Protobuf <-> domain conversion for containerd's snapshots API: the only place both meet.

Every call's reply passes through here, so answers are built in one pass: fields are set
in place on the reply's own sub-messages (a message given to a constructor is copied
again), and timestamps are computed from the datetime directly (protobuf's
`Timestamp.FromDatetime`/`ToDatetime` cost more than the whole rest of a Stat).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta, timezone

from google.protobuf.internal.containers import RepeatedCompositeFieldContainer
from google.protobuf.timestamp_pb2 import Timestamp

from snapmux.adapters.pb.containerd.api.services.snapshots.v1 import snapshots_pb2 as pb
from snapmux.adapters.pb.containerd.api.types import mount_pb2
from snapmux.domain.errors import InvalidArgumentError
from snapmux.domain.model import Info, Kind, Mount, Usage

SNAPSHOTS_SERVICE = pb.DESCRIPTOR.services_by_name["Snapshots"].full_name
"""containerd.services.snapshots.v1.Snapshots: the gRPC service name, as health checks and method paths spell it."""

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _set_timestamp(stamp: Timestamp, when: datetime) -> None:
    """Exact to the microsecond, as FromDatetime is; a naive datetime counts as UTC, as there."""
    since = (when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)) - _EPOCH
    stamp.seconds = since.days * 86400 + since.seconds
    stamp.nanos = since.microseconds * 1000


def _datetime(stamp: Timestamp) -> datetime:
    """ToDatetime(tzinfo=utc), nanoseconds truncated to microseconds; a timestamp outside what
    datetime can represent is the sender's malformed message."""
    if not 0 <= stamp.nanos < 1_000_000_000:  # protobuf's Timestamp rule, which ToDatetime enforces
        raise InvalidArgumentError(f"invalid timestamp: nanos {stamp.nanos} outside [0, 1e9)")
    try:
        return _EPOCH + timedelta(seconds=stamp.seconds, microseconds=stamp.nanos // 1000)
    except (ValueError, OverflowError) as error:
        raise InvalidArgumentError(f"invalid timestamp: {error}") from None


def fill_info(message: pb.Info, info: Info) -> pb.Info:
    message.name = info.name
    message.parent = info.parent
    message.kind = int(info.kind)
    _set_timestamp(message.created_at, info.created)
    _set_timestamp(message.updated_at, info.updated)
    message.labels.update(info.labels)
    return message


def list_responses(infos: Iterable[Info], bytes_per_message: int) -> list[pb.ListSnapshotsResponse]:
    """Infos in as few messages as fit `bytes_per_message` each (one Info alone may be bigger): a
    batch of snapshots with big label maps must not exceed the wire's message size limit."""
    responses: list[pb.ListSnapshotsResponse] = []
    batch: list[pb.Info] = []
    size = 0
    for info in infos:
        message = fill_info(pb.Info(), info)
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


def fill_mounts(field: RepeatedCompositeFieldContainer[mount_pb2.Mount], mounts: Iterable[Mount]) -> None:
    for m in mounts:
        field.add(type=m.type, source=m.source, target=m.target, options=m.options)


def mounts_from_pb(mounts: Iterable[mount_pb2.Mount]) -> list[Mount]:
    return [Mount(m.type, m.source, m.target, tuple(m.options)) for m in mounts]


def usage_to_pb(usage: Usage) -> pb.UsageResponse:
    return pb.UsageResponse(size=usage.size, inodes=usage.inodes)


def usage_from_pb(message: pb.UsageResponse) -> Usage:
    return Usage(size=message.size, inodes=message.inodes)
