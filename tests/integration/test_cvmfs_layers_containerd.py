"""Issue #3 end to end: containerd pulls with remote-snapshot labels (ctr-remote rpull) from a
local docker-registry through cvmfs-snapshotter, whose absolute-mountpoint is a temp layout
filled by `cvmfs-snapshotter publish`. Published layers are never downloaded (the registry's
access log says so); missing ones fall back; a vanished one is Unavailable and survives restarts.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from snapmux.adapters.cvmfs.chains import CHAINS_DIR
from snapmux.adapters.cvmfs.layers import CvmfsLayerStore, parse_digest
from snapmux.domain.labels import REMOTE_LABEL
from snapmux.entrypoints.cvmfs_snapshotter.publish import main as publish
from tests.integration.conftest import require_binaries, require_root, unix_socket_listening
from tests.support.containerd import Containerd, wait_until
from tests.support.images import LAYER_ZSTD, WHITEOUT_IMAGE_LISTING, BuiltImage, whiteout_image
from tests.support.registry import Registry

pytestmark = pytest.mark.integration

SNAPSHOTTER = "cvmfs"


@dataclass
class Stack:
    tmp: Path
    registry: Registry
    containerd: Containerd
    layout: Path
    socket: str
    daemons: object

    def start_snapshotter(self):
        config = self.tmp / "cvmfs-snapshotter.toml"
        config.write_text(f'root = "{self.tmp / "snap-root"}"\naddress = "{self.socket}"\n'
                          f'absolute-mountpoint = "{self.layout}"\nlog-level = "debug"\n')
        return self.daemons.start(["cvmfs-snapshotter", "--config", str(config)], self.tmp / "snapshotter.log",
                                  lambda: unix_socket_listening(self.socket))

    def push_and_publish(self, image: BuiltImage, reference: str) -> str:
        """Published as layers only (the publisher's DUCC chains set aside, as in a layout without
        them): these tests are about layers; chains are served, and tested, in test_cvmfs_first_pull."""
        remote = self.registry.push(image.layout, image.tag, reference)
        assert publish(["--plain-http", "--target", str(self.layout), remote]) == 0
        if (self.layout / CHAINS_DIR).exists():
            shutil.rmtree(self.layout / CHAINS_DIR)
        return remote

    def rpull(self, reference: str) -> int:
        """Pull with the stargz remote-snapshot labels; returns the log mark from before the pull."""
        mark = self.registry.mark()
        self.ctr_remote("images", "rpull", "--plain-http", "--snapshotter", SNAPSHOTTER, reference)
        return mark

    def ctr_remote(self, *args: str) -> None:
        import subprocess

        argv = ["ctr-remote", "--address", self.containerd.address, "--namespace", self.containerd.namespace, *args]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{argv} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"

    def run(self, reference: str, name: str) -> str:
        return self.containerd.ctr("run", "--rm", "--snapshotter", SNAPSHOTTER, reference, name).stdout

    def is_remote(self, chain_id: str) -> bool:
        info = json.loads(self.containerd.ctr("snapshots", "--snapshotter", SNAPSHOTTER, "info", chain_id).stdout)
        return info.get("Labels", {}).get(REMOTE_LABEL) == "true"

    def remove_layer(self, layer) -> Path:
        """Moves a published layer out of the layout (our own temp dir); returns where it went."""
        found = Path(CvmfsLayerStore(str(self.layout)).layer_dir(parse_digest(layer.digest)))
        away = self.tmp / f"away-{found.name}"
        shutil.move(found, away)
        return away


@pytest.fixture
def stack(tmp_path, daemons):
    require_root()
    require_binaries("containerd", "ctr", "ctr-remote", "runc", "skopeo", "docker-registry", "cvmfs-snapshotter")
    layout = tmp_path / "layout"
    layout.mkdir()
    socket_path = str(tmp_path / "run" / "snapshotter.sock")
    with Registry.start(tmp_path / "registry") as registry, contextlib.ExitStack() as exit_stack:
        built = Stack(tmp_path, registry, None, layout, socket_path, daemons)  # type: ignore[arg-type]
        built.start_snapshotter()
        built.containerd = exit_stack.enter_context(Containerd.start(tmp_path / "containerd", {SNAPSHOTTER: socket_path}))
        yield built


def chain_ids(image: BuiltImage) -> list[str]:
    """containerd's identity.ChainID of each layer, from the image's diff IDs."""
    import hashlib

    chain, found = "", []
    for layer in image.layers:
        chain = layer.diff_id if not chain else "sha256:" + hashlib.sha256(f"{chain} {layer.diff_id}".encode()).hexdigest()
        found.append(chain)
    return found


def test_published_image_runs_without_downloading_its_layers(stack, tmp_path):
    image = whiteout_image(str(tmp_path / "oci"))
    reference = stack.push_and_publish(image, "snapmux/whiteouts:v1")
    mark = stack.rpull(reference)
    assert stack.run(reference, "c1").split() == WHITEOUT_IMAGE_LISTING.split()
    for layer in image.layers:
        assert stack.registry.blob_fetches(layer.digest, since=mark) == []
    for chain_id in chain_ids(image):
        assert stack.is_remote(chain_id)


@pytest.mark.parametrize("writer", ["python", "skopeo"])
def test_a_published_zstd_image_is_served_in_place(stack, tmp_path, writer):
    """tar+zstd layers - written by Python, or recompressed by `skopeo copy --dest-compress-format
    zstd` on the way to the registry - published, then run by containerd from the layout with no
    blob of theirs fetched from the registry."""
    image = whiteout_image(str(tmp_path / "oci"), compress="zstd" if writer == "python" else True)
    options = ["--dest-compress-format", "zstd"] if writer == "skopeo" else []
    reference = stack.registry.push(image.layout, image.tag, "snapmux/zstd:v1", *options)
    assert publish(["--plain-http", "--target", str(stack.layout), reference]) == 0
    layers = registry_manifest(stack.registry, "snapmux/zstd", "v1")["layers"]
    assert {layer["mediaType"] for layer in layers} == {LAYER_ZSTD}  # the registry serves zstd
    mark = stack.rpull(reference)
    ran = stack.containerd.ctr("run", "--rm", "--snapshotter", SNAPSHOTTER, reference, "z1", "cat", "/data/top.txt")
    assert ran.stdout == "from layer 3\n"  # a file of the top zstd layer
    for layer in layers:
        assert stack.registry.blob_fetches(layer["digest"], since=mark) == []
    assert all(stack.is_remote(chain_id) for chain_id in chain_ids(image))


def registry_manifest(registry: Registry, repo: str, tag: str) -> dict:
    request = urllib.request.Request(f"http://{registry.host}/v2/{repo}/manifests/{tag}",
                                     headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def test_unpublished_middle_layer_falls_back_and_the_rest_stays_remote(stack, tmp_path):
    image = whiteout_image(str(tmp_path / "oci"))
    reference = stack.push_and_publish(image, "snapmux/partial:v1")
    stack.remove_layer(image.layers[1])
    mark = stack.rpull(reference)
    assert stack.run(reference, "c1").split() == WHITEOUT_IMAGE_LISTING.split()
    bottom, middle, top = chain_ids(image)
    assert stack.registry.blob_fetches(image.layers[1].digest, since=mark) != []
    assert stack.registry.blob_fetches(image.layers[0].digest, since=mark) == []
    assert stack.is_remote(bottom)
    assert not stack.is_remote(middle)
    # containerd 1.6's unpacker fetches every layer above the first local one, but the
    # snapshot of the top layer is still the published directory, not an unpack:
    assert stack.is_remote(top)


def test_vanished_layer_is_unavailable_and_the_store_survives_a_restart(stack, tmp_path):
    first = whiteout_image(str(tmp_path / "oci-1"))
    second = whiteout_image(str(tmp_path / "oci-2"), variant="second")
    first_ref = stack.push_and_publish(first, "snapmux/first:v1")
    second_ref = stack.push_and_publish(second, "snapmux/second:v1")
    stack.rpull(first_ref)
    stack.rpull(second_ref)
    stack.containerd.ctr("containers", "create", "--snapshotter", SNAPSHOTTER, first_ref, "holder")
    stack.remove_layer(first.layers[1])

    done = stack.containerd.ctr("snapshots", "--snapshotter", SNAPSHOTTER, "mounts", "/tmp/x", "holder", check=False)
    said = done.stderr + done.stdout
    assert done.returncode != 0 and "is not an available directory: unavailable" in said  # code Unavailable
    assert first.layers[1].digest.split(":")[1] in said  # naming the vanished layer

    stack.daemons.started[-1].kill()
    stack.start_snapshotter()
    wait_until(lambda: stack.containerd.ctr("snapshots", "--snapshotter", SNAPSHOTTER, "ls", check=False)
               .returncode == 0, 60, "containerd -> restarted snapshotter")
    assert ": 5 available, 1 unavailable" in (tmp_path / "snapshotter.log").read_text()
    listed = stack.containerd.ctr("snapshots", "--snapshotter", SNAPSHOTTER, "ls").stdout
    assert "holder" in listed and all(chain in listed for chain in chain_ids(first) + chain_ids(second))
    assert stack.run(second_ref, "c2").split() == WHITEOUT_IMAGE_LISTING.split()
    done = stack.containerd.ctr("run", "--rm", "--snapshotter", SNAPSHOTTER, first_ref, "c3", check=False)
    assert done.returncode != 0
    assert os.path.isdir(tmp_path / "snap-root")
