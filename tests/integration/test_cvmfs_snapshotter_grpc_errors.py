"""Bad input to the cvmfs-snapshotter daemon, over real gRPC: the right status code, and nothing changes.

"Nothing changes" means the List result and every path under the root's
`snapshots/` directory are identical before and after each rejected call.
"""

from __future__ import annotations

import os

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from snapmux.adapters.pb.containerd.api.services.snapshots.v1 import snapshots_pb2 as pb
from snapmux.adapters.pb.containerd.api.services.snapshots.v1 import snapshots_pb2_grpc as pb_grpc
from snapmux.adapters.overlay.layout import NEW_PREFIX
from tests.integration.conftest import require_binaries, unix_socket_listening
from tests.support.snapshot_dirs import owned_entries

pytestmark = pytest.mark.integration
SN = "cvmfs"
C = grpc.StatusCode


@pytest.fixture
def stub(daemons, tmp_path):
    require_binaries("cvmfs-snapshotter")
    sock = str(tmp_path / "run" / "s.sock")
    argv = ["cvmfs-snapshotter", "--root", str(tmp_path / "root"), "--address", sock, "--log-level", "warning"]
    daemons.start(argv, tmp_path / "daemon.log", lambda: unix_socket_listening(sock))
    with grpc.insecure_channel(f"unix://{sock}") as channel:
        client = pb_grpc.SnapshotsStub(channel)
        client.Prepare(pb.PrepareSnapshotRequest(snapshotter=SN, key="a"))
        client.Commit(pb.CommitSnapshotRequest(snapshotter=SN, name="base", key="a"))
        client.Prepare(pb.PrepareSnapshotRequest(snapshotter=SN, key="child", parent="base"))
        client.View(pb.ViewSnapshotRequest(snapshotter=SN, key="v", parent="base"))
        client.Prepare(pb.PrepareSnapshotRequest(snapshotter=SN, key="active", labels={"l": "1"}))
        yield client


def state(stub, root) -> tuple:
    """Rows and owned directories (`owned_entries`: not those reserved in the background)."""
    infos = sorted((i.name, i.kind, i.parent, tuple(sorted(i.labels.items())), i.updated_at.ToNanoseconds())
                   for reply in stub.List(pb.ListSnapshotsRequest(snapshotter=SN)) for i in reply.info)
    owned = owned_entries(root / "snapshots")
    paths = sorted(os.path.join(d, n) for entry in owned for d, dirs, files in os.walk(root / "snapshots" / entry)
                   for n in dirs + files)
    return infos, owned, paths


BAD_CALLS = {
    "empty key": (C.INVALID_ARGUMENT, "Prepare", pb.PrepareSnapshotRequest(snapshotter=SN, key="")),
    "unknown parent": (C.NOT_FOUND, "Prepare", pb.PrepareSnapshotRequest(snapshotter=SN, key="x", parent="nope")),
    "parent not committed": (C.INVALID_ARGUMENT, "Prepare", pb.PrepareSnapshotRequest(snapshotter=SN, key="x", parent="active")),
    "view of active parent": (C.INVALID_ARGUMENT, "View", pb.ViewSnapshotRequest(snapshotter=SN, key="x", parent="active")),
    "duplicate key": (C.ALREADY_EXISTS, "Prepare", pb.PrepareSnapshotRequest(snapshotter=SN, key="active")),
    "duplicate view key": (C.ALREADY_EXISTS, "View", pb.ViewSnapshotRequest(snapshotter=SN, key="base")),
    "commit of a view": (C.FAILED_PRECONDITION, "Commit", pb.CommitSnapshotRequest(snapshotter=SN, name="n", key="v")),
    "commit of committed": (C.FAILED_PRECONDITION, "Commit", pb.CommitSnapshotRequest(snapshotter=SN, name="n", key="base")),
    "commit onto a taken name": (C.ALREADY_EXISTS, "Commit", pb.CommitSnapshotRequest(snapshotter=SN, name="base", key="active")),
    "commit of a view onto a taken name": (C.ALREADY_EXISTS, "Commit", pb.CommitSnapshotRequest(snapshotter=SN, name="base", key="v")),
    "commit of unknown": (C.NOT_FOUND, "Commit", pb.CommitSnapshotRequest(snapshotter=SN, name="n", key="nope")),
    "remove with children": (C.FAILED_PRECONDITION, "Remove", pb.RemoveSnapshotRequest(snapshotter=SN, key="base")),
    "remove unknown": (C.NOT_FOUND, "Remove", pb.RemoveSnapshotRequest(snapshotter=SN, key="nope")),
    "oversize label on prepare": (C.INVALID_ARGUMENT, "Prepare", pb.PrepareSnapshotRequest(snapshotter=SN, key="x", labels={"k": "v" * 4096})),
    "oversize label on commit": (C.INVALID_ARGUMENT, "Commit", pb.CommitSnapshotRequest(snapshotter=SN, name="n", key="active", labels={"k": "v" * 5000})),
    "oversize label on update": (C.INVALID_ARGUMENT, "Update", pb.UpdateSnapshotRequest(
        snapshotter=SN, info=pb.Info(name="active", labels={"k": "v" * 4096}), update_mask=FieldMask(paths=["labels.k"]))),
    "bad field path": (C.INVALID_ARGUMENT, "Update", pb.UpdateSnapshotRequest(
        snapshotter=SN, info=pb.Info(name="active", parent="base"), update_mask=FieldMask(paths=["parent"]))),
    "update unknown": (C.NOT_FOUND, "Update", pb.UpdateSnapshotRequest(snapshotter=SN, info=pb.Info(name="nope"))),
    "mounts of committed": (C.FAILED_PRECONDITION, "Mounts", pb.MountsRequest(snapshotter=SN, key="base")),
    "mounts of unknown": (C.NOT_FOUND, "Mounts", pb.MountsRequest(snapshotter=SN, key="nope")),
    "stat unknown": (C.NOT_FOUND, "Stat", pb.StatSnapshotRequest(snapshotter=SN, key="nope")),
    "usage unknown": (C.NOT_FOUND, "Usage", pb.UsageRequest(snapshotter=SN, key="nope")),
    "NUL in key": (C.INVALID_ARGUMENT, "Prepare", pb.PrepareSnapshotRequest(snapshotter=SN, key="a\x00b")),
    "64 KiB key": (C.INVALID_ARGUMENT, "Prepare", pb.PrepareSnapshotRequest(snapshotter=SN, key="k" * 65536)),
    "64 KiB commit name": (C.INVALID_ARGUMENT, "Commit", pb.CommitSnapshotRequest(snapshotter=SN, name="k" * 65536, key="active")),
}


@pytest.mark.parametrize("case", sorted(BAD_CALLS))
def test_bad_call_is_rejected_with_its_code_and_changes_nothing(stub, tmp_path, case):
    code, method, request = BAD_CALLS[case]
    before = state(stub, tmp_path / "root")
    with pytest.raises(grpc.RpcError) as raised:
        getattr(stub, method)(request)
    assert raised.value.code() == code, raised.value.details()
    assert raised.value.details()
    assert state(stub, tmp_path / "root") == before


@pytest.mark.parametrize("bad", ["name==", "==x", 'labels."open', "name=x", "kind~=("])
def test_bad_filter_is_invalid_argument(stub, tmp_path, bad):
    before = state(stub, tmp_path / "root")
    with pytest.raises(grpc.RpcError) as raised:
        list(stub.List(pb.ListSnapshotsRequest(snapshotter=SN, filters=[bad])))
    assert raised.value.code() == C.INVALID_ARGUMENT
    assert state(stub, tmp_path / "root") == before


def test_keys_with_slashes_and_dots_are_opaque(stub, tmp_path):
    keys = ["a/b", "..", "../../etc", "/abs", "ns/1/sha256:x", "a/../../b"]
    for key in keys:
        stub.Prepare(pb.PrepareSnapshotRequest(snapshotter=SN, key=key))
        assert stub.Stat(pb.StatSnapshotRequest(snapshotter=SN, key=key)).info.name == key
    entries = os.listdir(tmp_path / "root" / "snapshots")
    assert all(entry.isdigit() or entry.startswith(NEW_PREFIX) for entry in entries), entries  # new-*: a reservation
    assert not (tmp_path / "etc").exists() and not (tmp_path / "root" / "etc").exists()
    assert {i.name for r in stub.List(pb.ListSnapshotsRequest(snapshotter=SN)) for i in r.info} >= set(keys)
