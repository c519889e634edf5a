"""The kubelet's pod lifecycle with CRI's snapshotter set to the demux: containerd 1.6 (CRI,
namespace k8s.io) -> demux-snapshotter -> the k8s.io "VM" (a Firecracker vsock stand-in in front
of its own cvmfs-snapshotter, `mount_type_prefix = ""` since the VM is local), with a second VM
that must see nothing. The pod's snapshots land in the k8s.io VM only, published layers are not
downloaded, and RemoveImage plus containerd's GC reaches the snapshots inside that VM.
"""

from __future__ import annotations

import pytest

from snapmux.domain.labels import REMOTE_LABEL
from tests.integration.conftest import require_binaries, require_root
from tests.support.images import whiteout_image
from tests.support.kubelet import (
    CRI_NAMESPACE, KUBELET_BINARIES, CriNode, held, layer_fetches, layout_state, remove_image_and_check_gc, run_pod,
)

pytestmark = pytest.mark.integration

OTHER_VM = "vm-b"


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    require_root()
    require_binaries(*KUBELET_BINARIES, "demux-snapshotter", "http-address-resolver")
    with CriNode.start(tmp_path_factory.mktemp("kubelet-demux"), vms=(CRI_NAMESPACE, OTHER_VM)) as started:
        yield started


def assert_only_in_the_k8s_vm(node: CriNode) -> None:
    inside = node.snapshots(CRI_NAMESPACE)
    assert inside and all(info.name.startswith(f"{CRI_NAMESPACE}/") for info in inside), [i.name for i in inside]
    assert node.snapshots(OTHER_VM) == []


def test_a_pod_through_the_demux_lands_in_the_k8s_vm_only_and_gc_reaches_it(node, tmp_path):
    image = whiteout_image(str(tmp_path / "oci"), variant="demux-published")
    reference = node.publish(image, "snapmux/kubelet-demux:v1")
    before, layout_before, mark = held(node), layout_state(node.layout), node.registry.mark()

    node.kubelet.cri.pull_image(reference)
    remote = [info for info in node.snapshots(CRI_NAMESPACE) if info.labels.get(REMOTE_LABEL) == "true"]
    assert len(remote) == len(image.layers)
    assert_only_in_the_k8s_vm(node)
    run_pod(node, image, reference, "through-demux")

    assert layer_fetches(node, image, mark) == []
    assert_only_in_the_k8s_vm(node)
    remove_image_and_check_gc(node, reference, before)
    assert node.snapshots(OTHER_VM) == [] and layout_state(node.layout) == layout_before


def test_an_unpublished_image_through_the_demux_is_unpacked_inside_the_k8s_vm(node, tmp_path):
    image = whiteout_image(str(tmp_path / "oci"), variant="demux-unpublished")
    reference = node.push(image, "snapmux/kubelet-demux-unpublished:v1")
    before, mark = held(node), node.registry.mark()

    run_pod(node, image, reference, "unpacked-in-vm")

    assert all(node.registry.blob_fetches(layer.digest, mark) for layer in image.layers)
    assert_only_in_the_k8s_vm(node)
    remove_image_and_check_gc(node, reference, before)
