"""The one-pass conversion answers exactly what protobuf's own helpers would, both ways."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from snapmux.adapters.grpc import convert
from snapmux.adapters.pb.containerd.api.services.snapshots.v1 import snapshots_pb2 as pb
from snapmux.domain.model import Info, Kind, Mount

WHEN = [
    datetime(2026, 12, 1, 9, 30, 1, 123456, tzinfo=timezone.utc),
    datetime(1969, 7, 20, 20, 17, 40, 999999, tzinfo=timezone.utc),  # before the epoch
    datetime(2026, 1, 1, 1, 0, 0, 5, tzinfo=timezone(timedelta(hours=2))),  # not UTC
    datetime(2026, 3, 4, 5, 6, 7, 890),  # naive: UTC, as FromDatetime takes it
]


@pytest.mark.parametrize("when", WHEN, ids=str)
def test_timestamps_match_protobufs_own_conversion(when):
    ours, theirs = Timestamp(), Timestamp()
    convert._set_timestamp(ours, when)
    theirs.FromDatetime(when)
    assert (ours.seconds, ours.nanos) == (theirs.seconds, theirs.nanos)
    assert convert._datetime(ours) == theirs.ToDatetime(tzinfo=timezone.utc)


def test_a_stat_reply_round_trips_the_info_and_serializes_as_before():
    info = Info(name="ns/1/sha256:abc", kind=Kind.COMMITTED, parent="ns/0/p", labels={"a": "1", "b": ""},
                created=WHEN[0], updated=WHEN[1])
    reply = pb.StatSnapshotResponse()
    convert.fill_info(reply.info, info)
    created, updated = Timestamp(), Timestamp()
    created.FromDatetime(info.created)
    updated.FromDatetime(info.updated)
    expected = pb.StatSnapshotResponse(info=pb.Info(name=info.name, parent=info.parent, kind=pb.COMMITTED,
                                                    created_at=created, updated_at=updated, labels=info.labels))
    assert reply.SerializeToString(deterministic=True) == expected.SerializeToString(deterministic=True)
    assert convert.info_from_pb(pb.StatSnapshotResponse.FromString(reply.SerializeToString()).info) == info


def test_mounts_are_filled_in_order_with_their_options():
    mounts = [Mount("overlay", "overlay", "", ("index=off", "lowerdir=/a:/b")), Mount("bind", "/x", "/t", ("ro", "rbind"))]
    reply = pb.MountsResponse()
    convert.fill_mounts(reply.mounts, mounts)
    assert convert.mounts_from_pb(pb.MountsResponse.FromString(reply.SerializeToString()).mounts) == mounts
