"""Stat and Mounts replies are built once per answered value: the same Info or Mount objects
(the overlay snapshotter's cache) get the same reply, anything else a reply of its own."""

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


async def test_the_same_info_gets_the_same_reply_and_a_changed_one_its_own():
    answers = Answers()
    servicer = SnapshotsServicer(answers)  # type: ignore[arg-type]
    first = await servicer.Stat(pb.StatSnapshotRequest(key="a"), None)
    assert await servicer.Stat(pb.StatSnapshotRequest(key="a"), None) is first
    assert (first.info.name, dict(first.info.labels)) == ("a", {"x": "1"})
    answers.info = Info("a", Kind.COMMITTED, labels={"x": "2"}, created=answers.info.created)
    changed = await servicer.Stat(pb.StatSnapshotRequest(key="a"), None)
    assert changed is not first and dict(changed.info.labels) == {"x": "2"} and dict(first.info.labels) == {"x": "1"}


async def test_the_same_mounts_get_the_same_reply_and_equal_new_ones_a_correct_one():
    answers = Answers()
    servicer = SnapshotsServicer(answers)  # type: ignore[arg-type]
    first = await servicer.Mounts(pb.MountsRequest(key="k"), None)
    assert await servicer.Mounts(pb.MountsRequest(key="k"), None) is first
    answers.current = [Mount("overlay", "overlay", options=("lowerdir=/r/1/fs",)), answers.current[0]]
    both = await servicer.Mounts(pb.MountsRequest(key="k"), None)
    assert [m.type for m in both.mounts] == ["overlay", "bind"] and [m.type for m in first.mounts] == ["bind"]


async def test_values_that_are_new_every_time_are_answered_right_and_the_kept_replies_are_bounded(monkeypatch):
    monkeypatch.setattr(module, "REPLIES_KEPT", 8)
    answers = Answers()
    servicer = SnapshotsServicer(answers)  # type: ignore[arg-type]
    for n in range(20):
        answers.info = Info(f"s{n}", Kind.ACTIVE)
        assert (await servicer.Stat(pb.StatSnapshotRequest(key="a"), None)).info.name == f"s{n}"
    assert len(servicer._stats._kept) <= 8
