"""The kubelet's whole path for a pod whose root filesystem comes from cvmfs-snapshotter, against
containerd 1.6's CRI plugin: PullImage, RunPodSandbox (a sandbox image built and imported here,
host network), CreateContainer, StartContainer, ContainerStatus, ExecSync, the container's log,
StopContainer, RemoveContainer, StopPodSandbox, RemovePodSandbox, RemoveImage, and containerd's GC.

One node (registry, snapshotter, containerd) serves the whole module; every test leaves it as it
found it (its images removed and collected), which the GC assertions check.
"""

from __future__ import annotations

import os

import pytest

from snapmux.adapters.cvmfs.snapshotter import REMOTE_LABEL
from tests.integration.conftest import require_binaries, require_root
from tests.support.containerd import wait_until
from tests.support.cri import CONTAINER_EXITED
from tests.support.images import WHITEOUT_IMAGE_LISTING, BuiltImage, store_foreign, whiteout_image
from tests.support.kubelet import CriNode, Pod

pytestmark = pytest.mark.integration

KUBELET_BINARIES = ("containerd", "ctr", "runc", "docker-registry", "skopeo", "tar", "cvmfs-snapshotter")
LISTING = WHITEOUT_IMAGE_LISTING.split()
APP = ["/bin/sh", "-c", "echo started; find /data -type f | sort; trap 'exit 0' TERM; "
       "while true; do busybox sleep 1; done"]
"""Prints the image's files to its log, then runs until the kubelet stops it (exit 0 on SIGTERM)."""


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    require_root()
    require_binaries(*KUBELET_BINARIES)
    with CriNode.start(tmp_path_factory.mktemp("kubelet-node")) as started:
        yield started


def layout_state(layout) -> list[tuple[str, int, int, int]]:
    """Every path under the layout with its mode, size and mtime: what "untouched" compares."""
    found = []
    for directory, dirs, files in os.walk(layout):
        for name in dirs + files:
            path = os.path.join(directory, name)
            stat = os.lstat(path)
            found.append((os.path.relpath(path, layout), stat.st_mode, stat.st_size, stat.st_mtime_ns))
    return sorted(found)


def check_root_filesystem(node: CriNode, pod: Pod) -> None:
    """ExecSync as a liveness probe would, reading the image's files in the running container."""
    listing = node.kubelet.exec(pod, "/bin/sh", "-c", "find /data -type f | sort")
    assert (listing.exit_code, listing.stdout.split()) == (0, LISTING)
    kept = node.kubelet.exec(pod, "cat", "/data/keep.txt")
    assert (kept.exit_code, kept.stdout) == (0, "kept from layer 1\n")
    gone = node.kubelet.exec(pod, "cat", "/data/gone.txt")  # deleted by the top layer
    assert gone.exit_code != 0 and "No such file" in gone.stderr
    replaced = node.kubelet.exec(pod, "ls", "/data/dir")  # made opaque by the top layer
    assert replaced.stdout.split() == ["new.txt"]
    whiteouts = node.kubelet.exec(pod, "/bin/sh", "-c", "find / -xdev -name '.wh.*'")
    assert (whiteouts.exit_code, whiteouts.stdout) == (0, "")


def run_pod(node: CriNode, image: BuiltImage, reference: str, name: str) -> None:
    """The kubelet's calls from PullImage to RemovePodSandbox, with the checks a kubelet would make."""
    assert node.kubelet.cri.pull_image(reference).startswith("sha256:")
    pod = node.kubelet.start_pod(name, reference, APP)
    status = node.kubelet.cri.container_status(pod.container_id)
    assert status.image_ref == f"{reference.rpartition(':')[0]}@{image.manifest.digest}"
    check_root_filesystem(node, pod)
    wait_until(lambda: len(node.kubelet.logs(pod)) > len(LISTING), 60, f"log of pod {name}")
    assert node.kubelet.logs(pod)[: len(LISTING) + 1] == ["started", *LISTING]
    node.kubelet.cri.stop_container(pod.container_id, 10)
    stopped = node.kubelet.cri.container_status(pod.container_id)
    assert (stopped.state, stopped.exit_code) == (CONTAINER_EXITED, 0)
    node.kubelet.cri.remove_container(pod.container_id)
    node.kubelet.cri.stop_pod_sandbox(pod.sandbox)
    node.kubelet.cri.remove_pod_sandbox(pod.sandbox)


def remove_image_and_check_gc(node: CriNode, reference: str, before: tuple[set[str], set[str]]) -> None:
    """RemoveImage, then containerd's GC: the snapshotter is back to what it held before the pull."""
    node.kubelet.cri.remove_image(reference)
    names_before, dirs_before = before
    wait_until(lambda: {info.name for info in node.snapshots()} == names_before, 60, "GC of the image's snapshots")
    wait_until(lambda: node.snapshot_dirs() == dirs_before, 60, "GC of the image's snapshot directories")


def held(node: CriNode) -> tuple[set[str], set[str]]:
    return {info.name for info in node.snapshots()}, node.snapshot_dirs()


def layer_fetches(node: CriNode, image: BuiltImage, since: int) -> list[str]:
    return [path for layer in image.layers for path in node.registry.blob_fetches(layer.digest, since)]


def test_a_pod_from_published_layers_runs_without_a_blob_fetched_and_gc_leaves_the_layout(node, tmp_path):
    image = whiteout_image(str(tmp_path / "oci"), variant="published")
    reference = node.publish(image, "snapmux/kubelet-published:v1")
    before, layout_before, mark = held(node), layout_state(node.layout), node.registry.mark()

    node.kubelet.cri.pull_image(reference)
    remote = [info for info in node.snapshots() if info.labels.get(REMOTE_LABEL) == "true"]
    assert len(remote) == len(image.layers)
    run_pod(node, image, reference, "published")

    assert layer_fetches(node, image, mark) == []
    remove_image_and_check_gc(node, reference, before)
    assert layout_state(node.layout) == layout_before


def test_a_pod_from_unpublished_layers_falls_back_to_download_and_gc_removes_them(node, tmp_path):
    image = whiteout_image(str(tmp_path / "oci"), variant="unpublished")
    reference = node.push(image, "snapmux/kubelet-unpublished:v1")
    before, mark = held(node), node.registry.mark()

    run_pod(node, image, reference, "unpublished")

    assert all(node.registry.blob_fetches(layer.digest, mark) for layer in image.layers)
    remove_image_and_check_gc(node, reference, before)


def test_a_pod_from_foreign_layers_sees_the_image_with_its_deletions(node, tmp_path):
    """Layers unpacked by a plain `tar -x` (`.wh.` files kept): served in place or downloaded, the
    container's filesystem is the image's; GC leaves the layout as it was."""
    image = whiteout_image(str(tmp_path / "oci"), variant="foreign")
    reference = node.push(image, "snapmux/kubelet-foreign:v1")
    store_foreign(image, str(node.layout))
    assert any(name.startswith(".wh.") for _, _, files in os.walk(node.layout) for name in files)
    before, layout_before = held(node), layout_state(node.layout)

    run_pod(node, image, reference, "foreign")

    remove_image_and_check_gc(node, reference, before)
    assert layout_state(node.layout) == layout_before
