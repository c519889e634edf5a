"""The kubelet's whole path for a pod whose root filesystem comes from cvmfs-snapshotter, against
containerd 1.6's CRI plugin: PullImage, RunPodSandbox (a sandbox image built and imported here,
host network), CreateContainer, StartContainer, ContainerStatus, ExecSync, the container's log,
StopContainer, RemoveContainer, StopPodSandbox, RemovePodSandbox, RemoveImage, and containerd's GC.

One node (registry, snapshotter, containerd) serves the whole module; every test leaves it as it
found it (its images removed and collected), which the GC assertions check.
"""

from __future__ import annotations

import contextlib
import os
import random

import pytest

from snapmux.adapters.cvmfs.layers import parse_digest
from snapmux.domain.labels import REMOTE_LABEL
from tests.integration.conftest import require_binaries, require_root
from tests.support.containerd import wait_until
from tests.support.images import store_foreign, whiteout_image
from tests.support.kubelet import KUBELET_BINARIES, CriNode, held, layer_fetches, layout_state, remove_image_and_check_gc, run_pod

pytestmark = pytest.mark.integration



@pytest.fixture(scope="module")
def node(tmp_path_factory):
    require_root()
    require_binaries(*KUBELET_BINARIES)
    with CriNode.start(tmp_path_factory.mktemp("kubelet-node")) as started:
        yield started


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


def test_pods_from_foreign_layers_see_the_image_with_its_deletions_before_and_after_the_scan(node, tmp_path):
    """Layers unpacked by a plain `tar -x` (`.wh.` files kept). The first pull may download them
    (and queues their whiteout scan); the pull after the scan may serve them in place over shadow
    trees. Either way the container's filesystem is the image's, and GC leaves the layout alone."""
    image = whiteout_image(str(tmp_path / "oci"), variant="foreign")
    reference = node.push(image, "snapmux/kubelet-foreign:v1")
    store_foreign(image, str(node.layout))
    assert any(name.startswith(".wh.") for _, _, files in os.walk(node.layout) for name in files)
    before, layout_before = held(node), layout_state(node.layout)

    run_pod(node, image, reference, "foreign-first")
    remove_image_and_check_gc(node, reference, before)
    top_shadows = node.root() / "whiteouts" / parse_digest(image.layers[-1].digest)
    wait_until(top_shadows.is_dir, 60, "the whiteout scan of the top layer")
    run_pod(node, image, reference, "foreign-scanned")
    remove_image_and_check_gc(node, reference, before)

    assert layout_state(node.layout) == layout_before


def processes_running(argv: list[str]) -> list[int]:
    wanted = "\0".join(argv).encode() + b"\0"
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            if open(f"/proc/{entry}/cmdline", "rb").read() == wanted:
                found.append(int(entry))
    return found


def test_a_test_that_fails_with_a_pod_running_leaves_no_process_of_it_behind(tmp_path):
    require_root()
    require_binaries(*KUBELET_BINARIES)
    command = ["/bin/busybox", "sleep", str(random.randrange(10**8, 10**9))]
    with pytest.raises(RuntimeError, match="the test failed"), CriNode.start(tmp_path / "node") as own:
        image = whiteout_image(str(tmp_path / "oci"), variant="teardown")
        reference = own.push(image, "snapmux/teardown:v1")
        own.kubelet.cri.pull_image(reference)
        own.kubelet.start_pod("left-running", reference, command)
        assert processes_running(command)
        raise RuntimeError("the test failed")
    assert processes_running(command) == []
