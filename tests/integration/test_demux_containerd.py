"""Real containerd 1.6 -> demux-snapshotter -> two "microVMs", with the real http-address-resolver.

Each VM is a cvmfs-snapshotter behind its own Firecracker vsock stand-in
(tests/support/demux_stack.py). containerd 1.6 sends no namespace metadata to proxy
plugins, so this exercises routing by the `<namespace>/<id>/<name>` key prefix.
`ctr -n vm-a run` and `ctr -n vm-b run` must each land in their own VM and nowhere else.
"""

from __future__ import annotations

import asyncio
import os
import sys

import grpc
import pytest

from snapmux.adapters.grpc.client import GrpcSnapshotService
from tests.integration.conftest import require_binaries, require_root, unix_socket_listening
from tests.support.conformance import REPO
from tests.support.containerd import Containerd, import_busybox_image, wait_until

pytestmark = pytest.mark.integration

SNAPSHOTTER = "demux"
VMS = ("vm-a", "vm-b")


def in_vm_snapshots(stack_root, namespace: str) -> set[str]:
    """Asks the VM's own snapshotter directly, bypassing the demux."""

    async def listed() -> set[str]:
        sock = stack_root / "vms" / namespace / "snapshotter.sock"
        async with grpc.aio.insecure_channel(f"unix://{sock}") as channel:
            return {info.name async for info in GrpcSnapshotService(channel).walk()}

    return asyncio.run(listed())


@pytest.fixture
def demux_stack(daemons, tmp_path):
    require_root()
    require_binaries("containerd", "ctr", "runc", "umoci", "cvmfs-snapshotter", "demux-snapshotter",
                     "http-address-resolver")
    root, listen = tmp_path / "stack", str(tmp_path / "demux" / "demux.sock")
    argv = [sys.executable, "-m", "tests.support.demux_stack", "--root", str(root), "--socket", listen,
            "--log-level", "info"]
    for namespace in VMS:
        argv += ["--vm", namespace]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    daemons.start(argv, tmp_path / "stack.log", lambda: unix_socket_listening(listen), env=env)
    return root, listen


def test_each_namespace_runs_in_its_own_vm(demux_stack, tmp_path):
    root, listen = demux_stack
    with Containerd.start(tmp_path / "containerd", {SNAPSHOTTER: listen}) as containerd:
        for namespace in VMS:
            image = import_busybox_image(containerd, tmp_path / f"image-{namespace}", SNAPSHOTTER, namespace)
            done = containerd.ctr("run", "--snapshotter", SNAPSHOTTER, image, f"c-{namespace}",
                                  "sh", "-c", f"echo hello from {namespace}", namespace=namespace)
            assert done.stdout.splitlines() == [f"hello from {namespace}"]

        for namespace in VMS:
            inside = in_vm_snapshots(root, namespace)
            assert inside, f"nothing landed in {namespace}'s snapshotter"
            assert all(key.startswith(f"{namespace}/") for key in inside), inside
            listed = containerd.ctr("snapshots", "--snapshotter", SNAPSHOTTER, "ls", namespace=namespace).stdout
            assert f"c-{namespace}" in listed and "Active" in listed

        # containerd's garbage collector walks the whole backend (no namespace: the demux's fan-out)
        # and removes what no namespace references: the Go original could not (firecracker-containerd#652)
        containerd.ctr("containers", "rm", "c-vm-a", namespace="vm-a")
        wait_until(lambda: not any(key.endswith("/c-vm-a") for key in in_vm_snapshots(root, "vm-a")), 60,
                   "GC of c-vm-a's snapshot inside vm-a")
        assert any(key.endswith("/c-vm-b") for key in in_vm_snapshots(root, "vm-b"))
