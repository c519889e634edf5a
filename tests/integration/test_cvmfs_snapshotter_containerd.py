"""cvmfs-snapshotter under a real containerd 1.6: run a container, survive kill -9, run another."""

from __future__ import annotations

import pytest

from tests.integration.conftest import require_binaries, require_root, unix_socket_listening
from tests.support.containerd import Containerd, import_busybox_image, wait_until

pytestmark = pytest.mark.integration

SNAPSHOTTER = "cvmfs"


def start_snapshotter(daemons, tmp_path, socket_path: str):
    argv = ["cvmfs-snapshotter", "--root", str(tmp_path / "snap-root"), "--address", socket_path, "--log-level", "info"]
    return daemons.start(argv, tmp_path / "snapshotter.log", lambda: unix_socket_listening(socket_path))


def run_container(containerd: Containerd, image: str, name: str) -> str:
    done = containerd.ctr(
        "run", "--rm", "--snapshotter", SNAPSHOTTER, image, name, "sh", "-c", "echo known-line; echo data > /tmp/f; cat /tmp/f"
    )
    return done.stdout


def reachable_through(containerd: Containerd) -> bool:
    return containerd.ctr("snapshots", "--snapshotter", SNAPSHOTTER, "ls", check=False).returncode == 0


def test_run_a_container_then_survive_kill_9(daemons, tmp_path):
    require_root()
    require_binaries("containerd", "ctr", "runc", "umoci", "cvmfs-snapshotter")
    socket_path = str(tmp_path / "run" / "snapshotter.sock")
    snapshotter = start_snapshotter(daemons, tmp_path, socket_path)
    with Containerd.start(tmp_path / "containerd", {SNAPSHOTTER: socket_path}) as containerd:
        image = import_busybox_image(containerd, tmp_path / "image", snapshotter=SNAPSHOTTER)
        assert run_container(containerd, image, "first").splitlines() == ["known-line", "data"]

        snapshotter.kill()
        start_snapshotter(daemons, tmp_path, socket_path)
        # containerd's proxy client redials with backoff: wait until it reaches the new process
        wait_until(lambda: reachable_through(containerd), 60, "containerd -> restarted snapshotter")
        assert run_container(containerd, image, "second").splitlines() == ["known-line", "data"]
        listed = containerd.ctr("snapshots", "--snapshotter", SNAPSHOTTER, "ls").stdout
        assert "Committed" in listed and "first" not in listed and "second" not in listed
