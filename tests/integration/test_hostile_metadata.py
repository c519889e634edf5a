"""A root or metadata store the snapshotter cannot use stops it with one line, and changes nothing.

Through the real daemon: each case is a root holding a real store (300 snapshots, built once by
the real adapter) that is then damaged; the daemon must exit 1 with exactly one line on stderr
naming the file and what to do, and leave metadata.db byte for byte as it was (no silent reset).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path

import grpc
import pytest

from snapmux.adapters.overlay.snapshotter import OverlaySnapshotter
from snapmux.adapters.pb.containerd.api.services.snapshots.v1 import snapshots_pb2 as pb
from snapmux.adapters.pb.containerd.api.services.snapshots.v1 import snapshots_pb2_grpc as pb_grpc
from tests.integration.conftest import require_binaries, require_root, unix_socket_listening

pytestmark = pytest.mark.integration
PROG = "cvmfs-snapshotter"
RESTORE = "move it aside or restore it"


@pytest.fixture(scope="module")
def good_root(tmp_path_factory) -> Path:
    require_root()
    root = tmp_path_factory.mktemp("good") / "root"

    async def build() -> None:
        store = await OverlaySnapshotter.open(str(root))
        for n in range(300):
            await store.prepare(f"key-{n}", labels={"snapmux.test/pad": "x" * 200})
        await store.close()

    asyncio.run(build())
    assert not (root / "metadata.db-wal").exists()  # checkpointed: the main file is the whole store
    return root


@pytest.fixture
def root(good_root, tmp_path) -> Path:
    copy = tmp_path / "root"
    shutil.copytree(good_root, copy, symlinks=True)
    return copy


def fingerprint(path: Path) -> tuple:
    st = os.lstat(path)
    content = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
    return content, st.st_mode, st.st_mtime_ns, st.st_size


def start(root: Path, tmp_path: Path, *wrapper: str) -> subprocess.CompletedProcess:
    require_binaries(PROG)
    argv = [*wrapper, PROG, "--root", str(root), "--address", str(tmp_path / "s.sock")]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


def refused(root: Path, tmp_path: Path, expected: str | re.Pattern, *wrapper: str) -> None:
    db = root / "metadata.db"
    before = fingerprint(db)
    done = start(root, tmp_path, *wrapper)
    assert done.returncode == 1, done.stderr
    if isinstance(expected, str):
        assert done.stderr == f"{PROG}: {expected}\n"
    else:
        assert expected.fullmatch(done.stderr), done.stderr
    assert fingerprint(db) == before
    assert not (tmp_path / "s.sock").exists()


def test_garbage_is_not_a_sqlite_database(root, tmp_path):
    (root / "metadata.db").write_bytes(os.urandom(64 * 1024))
    refused(root, tmp_path, f"metadata store {root}/metadata.db is not a SQLite database: {RESTORE}")


def test_a_truncated_store_is_corrupt(root, tmp_path):
    db = root / "metadata.db"
    os.truncate(db, db.stat().st_size // 3)
    refused(root, tmp_path, re.compile(rf"{PROG}: metadata store {root}/metadata.db is corrupt \([^\n]+\): {RESTORE}\n"))


def test_a_newer_schema_version_is_refused(root, tmp_path):
    with sqlite3.connect(root / "metadata.db") as db:
        db.execute("PRAGMA user_version = 99")
    db.close()
    refused(root, tmp_path, f"metadata store {root}/metadata.db has schema version 99, newer than this snapshotter's"
                            " 1: run the version that wrote it, or restore an older copy")


def test_another_schema_is_refused(root, tmp_path):
    (root / "metadata.db").unlink()
    with sqlite3.connect(root / "metadata.db") as db:
        db.execute("CREATE TABLE images (name TEXT)")
    db.close()
    refused(root, tmp_path, f"metadata store {root}/metadata.db is not a snapshotter metadata store (tables: images):"
                            f" {RESTORE}")


def test_an_emptied_store_beside_snapshot_directories_is_not_a_new_store(root, tmp_path):
    os.truncate(root / "metadata.db", 0)
    refused(root, tmp_path, f"metadata store {root}/metadata.db is empty but the root holds snapshot directories:"
                            " restore it (a new store would discard them)")
    assert len(os.listdir(root / "snapshots")) == 300


def test_an_unreadable_store_is_named(root, tmp_path):
    """Root reads any file; without CAP_DAC_OVERRIDE (as in a confined unit) mode 000 is unreadable."""
    require_binaries("setpriv")
    os.chmod(root / "metadata.db", 0)
    caps = "-dac_override,-dac_read_search"
    refused(root, tmp_path, f"metadata store {root}/metadata.db cannot be opened for writing (Permission denied):"
                            " check that it is a regular file the daemon may read and write",
            "setpriv", "--bounding-set", caps, "--inh-caps", caps)


def test_a_store_that_is_a_directory_is_named(tmp_path):
    root = tmp_path / "root"
    (root / "metadata.db").mkdir(parents=True)
    refused(root, tmp_path, f"metadata store {root}/metadata.db cannot be opened for writing (Is a directory):"
                            " check that it is a regular file the daemon may read and write")


def test_a_root_that_is_a_file_is_named(tmp_path):
    root = tmp_path / "root"
    root.write_text("not a directory")
    done = start(root, tmp_path)
    assert done.returncode == 1
    assert done.stderr == f"{PROG}: snapshotter root {root} is not a directory: move it aside or choose another root\n"
    assert root.read_text() == "not a directory"


def test_a_second_snapshotter_on_the_same_root_is_refused_and_the_first_keeps_serving(root, tmp_path, daemons):
    first = tmp_path / "first.sock"
    daemons.start([PROG, "--root", str(root), "--address", str(first)], tmp_path / "first.log",
                  lambda: unix_socket_listening(first))
    done = start(root, tmp_path)
    assert done.returncode == 1
    assert done.stderr == (f"{PROG}: another cvmfs-snapshotter uses root {root} (it holds {root}/lock):"
                           " stop it first, or give this one another root\n")
    with grpc.insecure_channel(f"unix://{first}") as channel:
        replies = pb_grpc.SnapshotsStub(channel).List(pb.ListSnapshotsRequest(snapshotter="cvmfs"))
        assert sum(len(reply.info) for reply in replies) == 300
