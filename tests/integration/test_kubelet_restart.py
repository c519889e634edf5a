"""cvmfs-snapshotter killed (-9) while a pod runs and started again: the kubelet's next calls
succeed. The running container keeps its overlay mount (the kernel holds it); ContainerStatus,
ExecSync, a second pod from the same image (no new pull: IfNotPresent), Stop/Remove of both and
RemoveImage with containerd's GC all go through the restarted snapshotter, which reopens its
metadata from disk.
"""

from __future__ import annotations

import pytest

from tests.integration.conftest import require_binaries, require_root
from tests.support.cri import CONTAINER_RUNNING
from tests.support.images import whiteout_image
from tests.support.kubelet import (
    APP, KUBELET_BINARIES, CriNode, check_root_filesystem, delete_checked_pod, held, remove_image_and_check_gc,
    start_checked_pod,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    require_root()
    require_binaries(*KUBELET_BINARIES)
    with CriNode.start(tmp_path_factory.mktemp("kubelet-restart")) as started:
        yield started


@pytest.mark.parametrize("published", [True, False], ids=["published", "unpublished"])
def test_the_kubelets_next_calls_succeed_after_the_snapshotter_is_killed_and_restarted(node, tmp_path, published):
    image = whiteout_image(str(tmp_path / "oci"), variant=f"restart-{published}")
    repository = f"snapmux/kubelet-restart-{'published' if published else 'unpublished'}:v1"
    reference = node.publish(image, repository) if published else node.push(image, repository)
    before = held(node)
    first = start_checked_pod(node, image, reference, f"before-kill-{published}")

    node.snapshotter.kill()
    assert not node.snapshotter.alive()
    node.start_snapshotter()

    # these two never reach the snapshotter: the container runs on, its overlay mounted by the kernel
    assert node.kubelet.cri.container_status(first.container_id).state == CONTAINER_RUNNING
    check_root_filesystem(node, first)
    node.wait_until_containerd_reaches_the_snapshotter()
    second = node.kubelet.start_pod(f"after-restart-{published}", reference, APP)
    check_root_filesystem(node, second)
    delete_checked_pod(node, second)
    delete_checked_pod(node, first)
    remove_image_and_check_gc(node, reference, before)
