"""A full disk under the snapshotter root: writes fail clearly, the daemon keeps serving, nothing is corrupt.

The root sits on a small ext4 made with `-m 0` (root ignores reserved blocks otherwise, and a
"full" disk would still take root's writes), loop-mounted for the test and always unmounted.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import subprocess
from pathlib import Path

import grpc
import pytest

from snapmux.adapters.overlay.reserve import RESERVED
from snapmux.adapters.pb.containerd.api.services.snapshots.v1 import snapshots_pb2 as pb
from snapmux.adapters.pb.containerd.api.services.snapshots.v1 import snapshots_pb2_grpc as pb_grpc
from tests.integration.conftest import require_binaries, require_root, unix_socket_listening
from tests.support.containerd import wait_until

pytestmark = pytest.mark.integration
SN = "cvmfs"
BIG_LABELS = {f"snapmux.test/label-{n}": "x" * 4000 for n in range(200)}
"""~800 kB of labels: the commit's row cannot fit in what SQLite's WAL already holds."""


@pytest.fixture
def small_fs(tmp_path):
    require_root()
    require_binaries("mkfs.ext4", "mount", "umount")
    image, mountpoint = tmp_path / "fs.img", tmp_path / "mnt"
    mountpoint.mkdir()
    with open(image, "wb") as handle:
        handle.truncate(32 * 1024 * 1024)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", str(image)], check=True, capture_output=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(mountpoint)], check=True, capture_output=True)
    try:
        yield mountpoint
    finally:
        if subprocess.run(["umount", str(mountpoint)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True)
        image.unlink()


def fill(path: Path) -> None:
    """Writes until ENOSPC, in ever smaller chunks, so not one block is left."""
    with open(path, "wb", buffering=0) as handle:
        for chunk in (1 << 20, 1 << 16, 1 << 12, 1 << 9):
            with contextlib.suppress(OSError):
                while True:
                    handle.write(b"\0" * chunk)
        try:
            os.fsync(handle.fileno())
        except OSError as error:
            assert error.errno == errno.ENOSPC
    with pytest.raises(OSError) as full:
        os.mkdir(path.parent / "probe")
    assert full.value.errno == errno.ENOSPC


def start(daemons, root: Path, sock: Path, log: Path):
    require_binaries("cvmfs-snapshotter")
    argv = ["cvmfs-snapshotter", "--root", str(root), "--address", str(sock)]
    return daemons.start(argv, log, lambda: unix_socket_listening(sock))


def names(stub) -> dict[str, int]:
    return {i.name: i.kind for reply in stub.List(pb.ListSnapshotsRequest(snapshotter=SN)) for i in reply.info}


def assert_disk_full(call) -> None:
    with pytest.raises(grpc.RpcError) as failed:
        call()
    assert failed.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "disk full: no space left on device" in failed.value.details()


def prepare_until_full(stub) -> dict[str, int]:
    """Prepares on the full disk: those that find a directory reserved before it filled (at most
    RESERVED) succeed whole, then one fails clearly. Returns what succeeded, as `names` lists it."""
    made = {}
    for n in range(RESERVED + 1):
        try:
            stub.Prepare(pb.PrepareSnapshotRequest(snapshotter=SN, key=f"full-{n}", parent="base-c"))
        except grpc.RpcError as failed:
            assert failed.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "disk full: no space left on device" in failed.details()
            return made
        made[f"full-{n}"] = pb.ACTIVE
    raise AssertionError(f"{RESERVED + 1} Prepares succeeded on a full disk")


def assert_consistent(root: Path, expected: set[str]) -> None:
    """With the daemon stopped: the store is intact and owns exactly the directories there are."""
    with contextlib.closing(sqlite3.connect(f"file:{root / 'metadata.db'}?mode=ro", uri=True)) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        rows = dict(db.execute("SELECT name, id FROM snapshots").fetchall())
    assert set(rows) == expected
    assert sorted(os.listdir(root / "snapshots")) == sorted(str(i) for i in rows.values())


def test_prepare_and_commit_fail_clearly_and_nothing_is_lost_once_space_is_freed(small_fs, daemons, tmp_path):
    root, sock, log = small_fs / "root", tmp_path / "s.sock", tmp_path / "d.log"
    daemon = start(daemons, root, sock, log)
    with grpc.insecure_channel(f"unix://{sock}") as channel:
        stub = pb_grpc.SnapshotsStub(channel)
        [mount] = stub.Prepare(pb.PrepareSnapshotRequest(snapshotter=SN, key="base")).mounts
        Path(mount.source, "hello").write_text("world")
        stub.Commit(pb.CommitSnapshotRequest(snapshotter=SN, name="base-c", key="base"))
        stub.Prepare(pb.PrepareSnapshotRequest(snapshotter=SN, key="a", parent="base-c"))

        fill(small_fs / "filler")
        made = prepare_until_full(stub)
        assert_disk_full(lambda: stub.Commit(pb.CommitSnapshotRequest(snapshotter=SN, name="a-c", key="a",
                                                                      labels=BIG_LABELS)))
        assert names(stub) == {"base-c": pb.COMMITTED, "a": pb.ACTIVE, **made}  # still serving, nothing half-done
        assert stub.Stat(pb.StatSnapshotRequest(snapshotter=SN, key="a")).info.kind == pb.ACTIVE
        # a reservation tried in a quiet moment fails on the full disk and goes: poll, with a deadline
        wait_until(lambda: not [n for n in os.listdir(root / "snapshots") if not n.isdigit()], 10, "no half-built dirs")

        (small_fs / "filler").unlink()
        stub.Prepare(pb.PrepareSnapshotRequest(snapshotter=SN, key="b", parent="base-c"))
        stub.Commit(pb.CommitSnapshotRequest(snapshotter=SN, name="a-c", key="a", labels=BIG_LABELS))
    assert daemon.stop() == 0
    assert_consistent(root, {"base-c", "a-c", "b", *made})

    start(daemons, root, sock, log)
    with grpc.insecure_channel(f"unix://{sock}") as channel:
        stub = pb_grpc.SnapshotsStub(channel)
        assert names(stub) == {"base-c": pb.COMMITTED, "a-c": pb.COMMITTED, "b": pb.ACTIVE, **made}
        info = stub.Stat(pb.StatSnapshotRequest(snapshotter=SN, key="a-c")).info
        assert info.parent == "base-c" and dict(info.labels) == BIG_LABELS
        [mount] = stub.Mounts(pb.MountsRequest(snapshotter=SN, key="b")).mounts
        assert mount.type in ("bind", "overlay")
