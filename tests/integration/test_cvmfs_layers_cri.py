"""The kubelet's path: containerd's CRI plugin pulls an image (PullImage, as the kubelet calls
it) into cvmfs-snapshotter. CRI labels each layer with `containerd.io/snapshot/cri.layer-digest`;
published layers must be served from the layout without one blob download, as with ctr-remote.
"""

from __future__ import annotations

import contextlib
import json

import pytest

from snapmux.domain.labels import REMOTE_LABEL
from snapmux.entrypoints.cvmfs_snapshotter.publish import main as publish
from tests.integration.conftest import require_binaries, require_root, unix_socket_listening
from tests.integration.test_cvmfs_layers_containerd import chain_ids
from tests.support.containerd import Containerd, CriConfig
from tests.support.cri import pull_image
from tests.support.images import whiteout_image
from tests.support.registry import Registry

pytestmark = pytest.mark.integration

SNAPSHOTTER = "cvmfs"
CRI_NAMESPACE = "k8s.io"
CRI_DIGEST_LABEL = "containerd.io/snapshot/cri.layer-digest"


@pytest.fixture
def cri_stack(tmp_path, daemons):
    require_root()
    require_binaries("containerd", "ctr", "docker-registry", "skopeo", "cvmfs-snapshotter")
    layout, socket_path = tmp_path / "layout", str(tmp_path / "run" / "snapshotter.sock")
    layout.mkdir()
    config = tmp_path / "cvmfs-snapshotter.toml"
    config.write_text(f'root = "{tmp_path / "snap-root"}"\naddress = "{socket_path}"\n'
                      f'absolute-mountpoint = "{layout}"\n')
    daemons.start(["cvmfs-snapshotter", "--config", str(config)], tmp_path / "snapshotter.log",
                  lambda: unix_socket_listening(socket_path))
    with Registry.start(tmp_path / "registry") as registry, contextlib.ExitStack() as stack:
        cri = CriConfig(SNAPSHOTTER, plain_http_registries=(registry.host,))
        containerd = stack.enter_context(
            Containerd.start(tmp_path / "containerd", {SNAPSHOTTER: socket_path}, namespace=CRI_NAMESPACE, cri=cri))
        yield registry, containerd, layout


def snapshot_labels(containerd: Containerd, chain_id: str) -> dict[str, str]:
    info = containerd.ctr("snapshots", "--snapshotter", SNAPSHOTTER, "info", chain_id).stdout
    return json.loads(info).get("Labels", {})


def test_a_cri_pull_serves_published_layers_without_downloading_them(cri_stack, tmp_path):
    registry, containerd, layout = cri_stack
    image = whiteout_image(str(tmp_path / "oci"))
    reference = registry.push(image.layout, image.tag, "snapmux/cri:v1")
    assert publish(["--plain-http", "--target", str(layout), reference]) == 0
    mark = registry.mark()

    assert pull_image(containerd.address, reference).startswith("sha256:")

    for layer in image.layers:
        assert registry.blob_fetches(layer.digest, since=mark) == []
    for layer, chain_id in zip(image.layers, chain_ids(image)):
        labels = snapshot_labels(containerd, chain_id)
        assert labels.get(REMOTE_LABEL) == "true"
        assert labels.get(CRI_DIGEST_LABEL) == layer.digest  # the label CRI sent is what found the layer


def test_a_cri_pull_of_an_unpublished_image_downloads_and_unpacks_it(cri_stack, tmp_path):
    registry, containerd, _ = cri_stack
    image = whiteout_image(str(tmp_path / "oci"))
    reference = registry.push(image.layout, image.tag, "snapmux/cri-unpublished:v1")
    mark = registry.mark()

    assert pull_image(containerd.address, reference).startswith("sha256:")

    for layer, chain_id in zip(image.layers, chain_ids(image)):
        assert registry.blob_fetches(layer.digest, since=mark) != []
        assert REMOTE_LABEL not in snapshot_labels(containerd, chain_id)
