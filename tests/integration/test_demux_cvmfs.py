"""Remote layers through the demux: real containerd 1.6 -> demux-snapshotter -> two "VMs", each a
cvmfs-snapshotter (behind its own Firecracker vsock stand-in) serving the same published layout.

containerd answers a remote snapshot (AlreadyExists on Prepare) with a namespace-less Walk on the
ref label and parent, fanned out over every VM, and records the first match's name as the layer's
backend key. Both VMs hold the same layers, so this checks that each namespace's layers are named
in and routed to its own VM only (also when both pull at once), that nothing is downloaded, and
that GC in one namespace removes its VM's snapshots and leaves the other's alone. The kubelet's
path too: containerd's CRI plugin (namespace k8s.io, `cri.layer-digest` labels) pulling through
the demux into the k8s.io VM.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from snapmux.adapters.grpc.client import GrpcSnapshotService
from snapmux.domain.labels import REMOTE_LABEL
from snapmux.domain.model import Info, Kind
from snapmux.entrypoints.cvmfs_snapshotter.publish import main as publish
from tests.integration.conftest import require_binaries, require_root, unix_socket_listening
from tests.support.conformance import REPO
from tests.support.containerd import Containerd, CriConfig, wait_until
from tests.support.cri import pull_image
from tests.support.images import WHITEOUT_IMAGE_LISTING, BuiltImage, whiteout_image
from tests.support.registry import Registry

pytestmark = pytest.mark.integration

SNAPSHOTTER = "demux"
VMS = ("vm-a", "vm-b")


@dataclass
class Stack:
    root: Path
    registry: Registry
    containerd: Containerd
    image: BuiltImage
    reference: str

    def rpull_argv(self, namespace: str) -> list[str]:
        return ["ctr-remote", "--address", self.containerd.address, "--namespace", namespace,
                "images", "rpull", "--plain-http", "--snapshotter", SNAPSHOTTER, self.reference]

    def rpull(self, *namespaces: str) -> None:
        """Pulls in every namespace at once (each with the stargz remote-snapshot labels)."""
        pulls = [subprocess.Popen(self.rpull_argv(ns), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for ns in namespaces]
        for namespace, pull in zip(namespaces, pulls):
            output, _ = pull.communicate(timeout=300)
            assert pull.returncode == 0, f"rpull in {namespace} exited {pull.returncode}:\n{output}"

    def run(self, namespace: str) -> list[str]:
        done = self.containerd.ctr("run", "--rm", "--snapshotter", SNAPSHOTTER, self.reference, f"c-{namespace}",
                                   namespace=namespace)
        return done.stdout.split()

    def in_vm(self, namespace: str) -> list[Info]:
        """What the VM's own snapshotter holds, asked over its socket (bypassing the demux)."""

        async def listed() -> list[Info]:
            sock = self.root / "vms" / namespace / "snapshotter.sock"
            async with grpc.aio.insecure_channel(f"unix://{sock}") as channel:
                return [info async for info in GrpcSnapshotService(channel).walk()]

        return asyncio.run(listed())

    def layer_fetches(self, since: int) -> list[str]:
        return [path for layer in self.image.layers for path in self.registry.blob_fetches(layer.digest, since)]


@contextlib.contextmanager
def demux_over_vms(tmp_path, daemons, vms, cri: bool = False) -> Iterator[Stack]:
    require_root()
    require_binaries("containerd", "ctr", "ctr-remote", "runc", "skopeo", "docker-registry", "cvmfs-snapshotter",
                     "demux-snapshotter", "http-address-resolver")
    layout, root, listen = tmp_path / "layout", tmp_path / "stack", str(tmp_path / "demux" / "demux.sock")
    layout.mkdir()
    with Registry.start(tmp_path / "registry") as registry:
        image = whiteout_image(str(tmp_path / "oci"))
        reference = registry.push(image.layout, image.tag, "snapmux/whiteouts:v1")
        assert publish(["--plain-http", "--target", str(layout), reference]) == 0
        argv = [sys.executable, "-m", "tests.support.demux_stack", "--root", str(root), "--socket", listen,
                "--log-level", "debug", *(arg for ns in vms for arg in ("--vm", ns))]
        # every VM's cvmfs-snapshotter serves the layout (as every VM would mount the same repository)
        env = {**os.environ, "PYTHONPATH": str(REPO), "SNAPMUX_CVMFS_ABSOLUTE_MOUNTPOINT": str(layout)}
        daemons.start(argv, tmp_path / "stack.log", lambda: unix_socket_listening(listen), env=env)
        cri_config = CriConfig(SNAPSHOTTER, plain_http_registries=(registry.host,)) if cri else None
        with Containerd.start(tmp_path / "containerd", {SNAPSHOTTER: listen}, cri=cri_config) as containerd:
            yield Stack(root, registry, containerd, image, reference)


@pytest.fixture
def stack(tmp_path, daemons):
    with demux_over_vms(tmp_path, daemons, VMS) as built:
        yield built


@pytest.fixture
def cri_stack(tmp_path, daemons):
    """containerd's CRI plugin (namespace k8s.io) pulling through the demux; k8s.io has its own VM."""
    with demux_over_vms(tmp_path, daemons, ("k8s.io", "vm-b"), cri=True) as built:
        yield built


def assert_vm_holds_only_its_own_remote_layers(stack: Stack, namespace: str) -> None:
    inside = stack.in_vm(namespace)
    assert inside, f"nothing landed in {namespace}'s snapshotter"
    assert all(info.name.startswith(f"{namespace}/") for info in inside), [i.name for i in inside]
    assert all(info.parent == "" or info.parent.startswith(f"{namespace}/") for info in inside)
    layers = [info for info in inside if info.kind == Kind.COMMITTED]
    assert len(layers) == len(stack.image.layers)
    assert all(info.labels.get(REMOTE_LABEL) == "true" for info in layers), [i.labels for i in layers]


def test_two_namespaces_pull_and_run_from_their_own_vm_and_gc_stays_in_its_vm(stack):
    mark = stack.registry.mark()
    for namespace in VMS:
        stack.rpull(namespace)
    for namespace in VMS:
        assert stack.run(namespace) == WHITEOUT_IMAGE_LISTING.split()
        assert "/data/gone.txt" not in stack.run(namespace)
        assert_vm_holds_only_its_own_remote_layers(stack, namespace)
    assert stack.layer_fetches(mark) == []

    # the layer keys containerd recorded route back to the VM (GC removes by exactly those keys)
    stack.containerd.ctr("images", "rm", "--sync", stack.reference, namespace="vm-a")
    wait_until(lambda: stack.in_vm("vm-a") == [], 60, "GC of vm-a's layers inside vm-a")
    assert_vm_holds_only_its_own_remote_layers(stack, "vm-b")
    listed = stack.containerd.ctr("snapshots", "--snapshotter", SNAPSHOTTER, "ls", namespace="vm-b").stdout
    assert listed.count("Committed") == len(stack.image.layers)
    assert stack.run("vm-b") == WHITEOUT_IMAGE_LISTING.split()


def test_concurrent_pulls_of_the_same_layers_each_land_in_their_own_vm(stack):
    mark = stack.registry.mark()
    stack.rpull(*VMS)
    for namespace in VMS:
        assert stack.run(namespace) == WHITEOUT_IMAGE_LISTING.split()
        assert_vm_holds_only_its_own_remote_layers(stack, namespace)
    assert stack.layer_fetches(mark) == []


def test_a_cri_pull_through_the_demux_lands_remote_in_the_k8s_namespaces_vm(cri_stack):
    mark = cri_stack.registry.mark()
    assert pull_image(cri_stack.containerd.address, cri_stack.reference).startswith("sha256:")
    assert cri_stack.layer_fetches(mark) == []
    assert_vm_holds_only_its_own_remote_layers(cri_stack, "k8s.io")
    assert cri_stack.in_vm("vm-b") == []
