"""Stat and Mounts replies are built (and serialized) once per answered value: the same Info or
Mount objects (the overlay snapshotter's cache) get the same bytes, anything else a reply of its
own; those bytes are what the wire carries."""

from __future__ import annotations

from snapmux.adapters.grpc import servicer as module
from snapmux.adapters.grpc.servicer import SnapshotsServicer
from snapmux.adapters.pb.containerd.api.services.snapshots.v1 import snapshots_pb2 as pb
from snapmux.domain.model import Info, Kind, Mount


class Answers:
    """Answers whatever the test put in `info` and `current` last."""

    def __init__(self) -> None:
        self.info = Info("a", Kind.COMMITTED, labels={"x": "1"})
        self.current = [Mount("bind", "/r/1/fs", options=("rw", "rbind"))]

    async def stat(self, key: str) -> Info:
        return self.info

    async def mounts(self, key: str) -> list[Mount]:
        return list(self.current)


async def stat(servicer: SnapshotsServicer) -> tuple[bytes, pb.StatSnapshotResponse]:
    answer = await servicer.Stat(pb.StatSnapshotRequest(key="a"), None)
    return answer, pb.StatSnapshotResponse.FromString(answer)


async def mounts(servicer: SnapshotsServicer) -> tuple[bytes, pb.MountsResponse]:
    answer = await servicer.Mounts(pb.MountsRequest(key="k"), None)
    return answer, pb.MountsResponse.FromString(answer)


async def test_the_same_info_gets_the_same_reply_and_a_changed_one_its_own():
    answers = Answers()
    servicer = SnapshotsServicer(answers)  # type: ignore[arg-type]
    first, reply = await stat(servicer)
    assert (await stat(servicer))[0] is first
    assert (reply.info.name, dict(reply.info.labels)) == ("a", {"x": "1"})
    answers.info = Info("a", Kind.COMMITTED, labels={"x": "2"}, created=answers.info.created)
    changed, reply = await stat(servicer)
    assert changed is not first and dict(reply.info.labels) == {"x": "2"}


async def test_the_same_mounts_get_the_same_reply_and_equal_new_ones_a_correct_one():
    answers = Answers()
    servicer = SnapshotsServicer(answers)  # type: ignore[arg-type]
    first, reply = await mounts(servicer)
    assert (await mounts(servicer))[0] is first and [m.type for m in reply.mounts] == ["bind"]
    answers.current = [Mount("overlay", "overlay", options=("lowerdir=/r/1/fs",)), answers.current[0]]
    assert [m.type for m in (await mounts(servicer))[1].mounts] == ["overlay", "bind"]


async def test_values_that_are_new_every_time_are_answered_right_and_the_kept_replies_are_bounded(monkeypatch):
    monkeypatch.setattr(module, "REPLIES_KEPT", 8)
    answers = Answers()
    servicer = SnapshotsServicer(answers)  # type: ignore[arg-type]
    for n in range(20):
        answers.info = Info(f"s{n}", Kind.ACTIVE)
        assert (await stat(servicer))[1].info.name == f"s{n}"
    assert len(servicer._stats._kept) <= 8
