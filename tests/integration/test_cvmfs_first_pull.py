"""Issue #10: the first pull on a fresh node is served from a layout built the way DUCC builds
unpacked.cern.ch (`.wh.` files kept, a `.cvmfscatalog` in each layerfs, optionally `.chains`).

Real containerd 1.6 + docker-registry + cvmfs-snapshotter on a fresh root: `ctr-remote images
rpull` and CRI PullImage download no layer blob (the registry's access log), and a container's
filesystem equals a plain pull's (containerd's own overlayfs snapshotter, another namespace):
every path with type, mode and owner, every file's hash, every symlink's target.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import urllib.request
from pathlib import Path

import pytest

from snapmux.adapters.cvmfs.chains import chain_dir, chain_ids
from tests.integration.conftest import require_binaries, require_root, unix_socket_listening
from tests.support.containerd import Containerd, CriConfig, wait_until
from tests.support.cri import pull_image
from snapmux.entrypoints.cvmfs_snapshotter.publish import main as publish_main
from tests.support.ducc import (
    LISTING_SCRIPT,
    deep_image,
    ducc_image,
    ducc_layout,
    ingest_layer,
    layerfs_path,
)
from tests.support.images import BuiltImage
from tests.support.registry import Registry, free_loopback_port

pytestmark = pytest.mark.integration

SNAPSHOTTER = "cvmfs"
PLAIN_NAMESPACE = "plain-pull"


class FirstPull:
    def __init__(self, tmp: Path, registry: Registry, daemons, cri: bool = False) -> None:
        self.tmp, self.registry, self.daemons = tmp, registry, daemons
        self.layout = tmp / "layout"
        self.layout.mkdir()
        self.socket = str(tmp / "run" / "snapshotter.sock")
        self.root = tmp / "snap-root"
        self.containerd: Containerd | None = None
        self.cri = cri
        self.metrics_port = free_loopback_port()

    def start_snapshotter(self, budget: float = 30.0) -> None:
        config = self.tmp / "cvmfs-snapshotter.toml"
        config.write_text(f'root = "{self.root}"\naddress = "{self.socket}"\nabsolute-mountpoint = "{self.layout}"\n'
                          f'foreign-scan-budget = {budget}\nlog-level = "debug"\n'
                          f'metrics-address = "127.0.0.1:{self.metrics_port}"\n')
        self.daemons.start(["cvmfs-snapshotter", "--config", str(config)], self.tmp / "snapshotter.log",
                           lambda: unix_socket_listening(self.socket))

    def publish(self, image: BuiltImage, reference: str, chains: bool = False) -> str:
        remote = self.registry.push(image.layout, image.tag, reference)
        ducc_layout(image, self.layout, chains=chains)
        return remote

    def rpull(self, reference: str, namespace: str | None = None) -> int:
        mark = self.registry.mark()
        argv = ["ctr-remote", "--address", self.containerd.address, "--namespace",
                namespace or self.containerd.namespace, "images", "rpull", "--plain-http", "--snapshotter",
                SNAPSHOTTER, reference]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"{argv}:\n{done.stdout}\n{done.stderr}"
        return mark

    def fetched(self, image: BuiltImage, since: int) -> list[str]:
        return [path for layer in image.layers for path in self.registry.blob_fetches(layer.digest, since)]

    def listing(self, reference: str, name: str, snapshotter: str = SNAPSHOTTER, namespace: str | None = None) -> str:
        done = self.containerd.ctr("run", "--rm", "--snapshotter", snapshotter, reference, name, "/bin/sh", "-c",
                                   LISTING_SCRIPT, namespace=namespace, timeout=600)
        assert done.stdout.count("\n") > 20
        return done.stdout

    def plain_listing(self, reference: str) -> str:
        """A plain pull and unpack by containerd's own overlayfs snapshotter, in its own namespace."""
        self.containerd.ctr("images", "pull", "--plain-http", reference, namespace=PLAIN_NAMESPACE, timeout=900)
        return self.listing(reference, "plain", "overlayfs", PLAIN_NAMESPACE)

    def snapshot_labels(self, key: str, namespace: str | None = None) -> dict[str, str]:
        info = self.containerd.ctr("snapshots", "--snapshotter", SNAPSHOTTER, "info", key, namespace=namespace).stdout
        return json.loads(info).get("Labels", {})

    def log(self) -> str:
        return (self.tmp / "snapshotter.log").read_text(errors="replace")

    def foreign_outcomes(self) -> dict[str, float]:
        """snapmux_foreign_layer_prepares_total by outcome, scraped from the daemon's /metrics."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as response:
            text = response.read().decode()
        found = re.findall(r'^snapmux_foreign_layer_prepares_total\{outcome="([^"]+)"\} (\S+)$', text, re.MULTILINE)
        return {outcome: float(value) for outcome, value in found}


@pytest.fixture
def first_pull(tmp_path, daemons, request):
    require_root()
    require_binaries("containerd", "ctr", "ctr-remote", "runc", "skopeo", "docker-registry", "cvmfs-snapshotter")
    budget = getattr(request, "param", 30.0)
    cri = budget == "cri"
    with Registry.start(tmp_path / "registry") as registry, contextlib.ExitStack() as stack:
        built = FirstPull(tmp_path, registry, daemons)
        built.start_snapshotter(30.0 if cri else budget)
        extra = {"namespace": "k8s.io", "cri": CriConfig(SNAPSHOTTER, plain_http_registries=(registry.host,))} if cri \
            else {}
        built.containerd = stack.enter_context(
            Containerd.start(tmp_path / "containerd", {SNAPSHOTTER: built.socket}, **extra))
        yield built


def absent_everywhere(listing: str) -> None:
    assert ".cvmfscatalog" not in listing and ".wh." not in listing
    for deleted in ("./data/gone.txt", "./data/link", "./data/tree/a", "./data/dir/old.txt", "./data/three.txt"):
        assert f"{deleted} " not in listing and f"{deleted}\n" not in listing


def test_rpull_of_foreign_layers_fetches_no_blob_and_shows_a_plain_pulls_filesystem(first_pull, tmp_path):
    image = ducc_image(str(tmp_path / "oci"))
    reference = first_pull.publish(image, "snapmux/ducc:v1")
    mark = first_pull.rpull(reference)
    assert first_pull.fetched(image, mark) == []
    served = first_pull.listing(reference, "c1")
    absent_everywhere(served)
    assert "./data/dir/new.txt regular file" in served and "./data/tree/back.txt" in served
    assert served == first_pull.plain_listing(reference)
    assert "scanned within the budget" in first_pull.log()
    outcomes = first_pull.foreign_outcomes()
    assert outcomes.get("scan-in-budget", 0) + outcomes.get("scanned", 0) == len(image.layers)


@pytest.mark.parametrize("first_pull", ["cri"], indirect=True)
def test_cri_pull_of_foreign_layers_fetches_no_blob_and_shows_a_plain_pulls_filesystem(first_pull, tmp_path):
    image = ducc_image(str(tmp_path / "oci"))
    reference = first_pull.publish(image, "snapmux/ducc-cri:v1")
    mark = first_pull.registry.mark()
    assert pull_image(first_pull.containerd.address, reference).startswith("sha256:")
    assert first_pull.fetched(image, mark) == []
    served = first_pull.listing(reference, "c1")
    absent_everywhere(served)
    assert served == first_pull.plain_listing(reference)


def test_duccs_chains_serve_the_image_as_one_lower_directory(first_pull, tmp_path):
    image = ducc_image(str(tmp_path / "oci"))
    reference = first_pull.publish(image, "snapmux/ducc-chains:v1", chains=True)
    mark = first_pull.rpull(reference)
    assert first_pull.fetched(image, mark) == []
    first_pull.containerd.ctr("containers", "create", "--snapshotter", SNAPSHOTTER, reference, "holder")
    mounts = first_pull.containerd.ctr("snapshots", "--snapshotter", SNAPSHOTTER, "mounts", "/m", "holder").stdout
    top_chain = chain_dir(str(first_pull.layout), chain_ids([layer.digest for layer in image.layers])[-1])
    lowers = mounts.split("lowerdir=")[1].split()[0].split(",")[0].split(":")
    assert len(lowers) == 2 and os.path.realpath(lowers[1]) == top_chain  # the catalog hider, then the chain
    assert not (first_pull.root / "whiteouts").exists() or os.listdir(first_pull.root / "whiteouts") == []
    served = first_pull.listing(reference, "c1")
    absent_everywhere(served)
    assert served == first_pull.plain_listing(reference)


@pytest.mark.parametrize("first_pull", [0.0], indirect=True)
def test_a_scan_over_budget_falls_back_and_the_next_pull_is_served_in_place(first_pull, tmp_path):
    image = ducc_image(str(tmp_path / "oci"))
    reference = first_pull.publish(image, "snapmux/ducc-budget:v1")
    mark = first_pull.rpull(reference)
    assert first_pull.fetched(image, mark) != []  # budget 0: nothing could be scanned in time
    assert "scan ran over the budget" in first_pull.log()
    assert first_pull.foreign_outcomes()["scan-over-budget"] >= 1
    scanned = first_pull.root / "whiteouts"
    wait_until(lambda: scanned.is_dir() and sum(os.path.isfile(scanned / name / "ready")
                                                for name in os.listdir(scanned)) == len(image.layers),
               120, "background scans")
    mark = first_pull.rpull(reference, namespace="second")
    assert first_pull.fetched(image, mark) == []
    served = first_pull.listing(reference, "c2", namespace="second")
    absent_everywhere(served)
    assert served == first_pull.plain_listing(reference)


def test_two_hundred_foreign_layers_with_whiteouts_pull_and_run(first_pull, tmp_path):
    image = deep_image(str(tmp_path / "oci"), 200)
    reference = first_pull.publish(image, "snapmux/deep:v1")
    mark = first_pull.rpull(reference)
    assert first_pull.fetched(image, mark) == []
    served = first_pull.listing(reference, "deep")
    keep = [line for line in served.splitlines() if line.startswith("./deep/keep-") and " regular" in line]
    gone = [line for line in served.splitlines() if line.startswith("./deep/gone-") and " regular" in line]
    assert len(keep) == 199 and [line.split()[0] for line in gone] == ["./deep/gone-199"]
    assert ".wh." not in served and ".cvmfscatalog" not in served
    assert len(os.listdir(first_pull.root / "l")) > 400  # the short lowerdir names the mount used
    assert served == first_pull.plain_listing(reference)


def place_layers(first_pull: FirstPull, image: BuiltImage, reference: str, kinds: str) -> None:
    """Per layer, bottom first: P published (by `cvmfs-snapshotter publish`), F foreign (as DUCC
    ingests it), M missing from the layout."""
    published = first_pull.tmp / "published"
    assert publish_main(["--plain-http", "--target", str(published), reference]) == 0
    for layer, kind in zip(image.layers, kinds, strict=True):
        if kind == "F":
            ingest_layer(image, layer.digest, first_pull.layout)
        elif kind == "P":
            hex_digest = layer.digest.split(":", 1)[1]
            target = first_pull.layout / ".layers" / hex_digest[:2]
            target.mkdir(parents=True, exist_ok=True)
            subprocess.run(["cp", "-a", str(published / ".layers" / hex_digest[:2] / hex_digest), str(target)],
                           check=True)


@pytest.mark.parametrize("kinds", ["PFFMP", "MPFPF", "FPFFM"])
def test_mixed_images_give_exactly_a_plain_pulls_filesystem(first_pull, tmp_path, kinds):
    image = ducc_image(str(tmp_path / "oci"), variant=kinds)
    reference = first_pull.registry.push(image.layout, image.tag, f"snapmux/mixed-{kinds.lower()}:v1")
    place_layers(first_pull, image, reference, kinds)
    mark = first_pull.rpull(reference)
    first_missing = kinds.index("M")
    for index, layer in enumerate(image.layers):  # containerd 1.6 fetches every layer above the first it unpacks
        assert bool(first_pull.registry.blob_fetches(layer.digest, mark)) == (index >= first_missing), index
    served = first_pull.listing(reference, "c1")
    absent_everywhere(served)
    assert served == first_pull.plain_listing(reference)


def test_a_repull_after_images_rm_downloads_only_the_missing_layer(first_pull, tmp_path):
    image = ducc_image(str(tmp_path / "oci"), variant="repull")
    reference = first_pull.registry.push(image.layout, image.tag, "snapmux/repull:v1")
    place_layers(first_pull, image, reference, "FPFFM")
    first_pull.rpull(reference)
    first_pull.containerd.ctr("images", "rm", "--sync", reference)
    mark = first_pull.rpull(reference)
    fetched = [index for index, layer in enumerate(image.layers) if first_pull.registry.blob_fetches(layer.digest, mark)]
    assert fetched == [4]
    assert first_pull.listing(reference, "c1") == first_pull.plain_listing(reference)


def test_chains_above_a_downloaded_layer_still_serve_the_image_flattened(first_pull, tmp_path):
    """Layer 1 is in neither form: containerd unpacks it; the chains of the layers above are
    named from the digest label its committed snapshot keeps."""
    image = ducc_image(str(tmp_path / "oci"), variant="chain-gap")
    reference = first_pull.publish(image, "snapmux/chain-gap:v1", chains=True)
    ids = chain_ids([layer.digest for layer in image.layers])
    subprocess.run(["rm", "-rf", chain_dir(str(first_pull.layout), ids[1]),
                    str(layerfs_path(first_pull.layout, image.layers[1].digest).parent)], check=True)
    mark = first_pull.rpull(reference)
    assert first_pull.registry.blob_fetches(image.layers[0].digest, mark) == []
    assert first_pull.registry.blob_fetches(image.layers[1].digest, mark) != []
    first_pull.containerd.ctr("containers", "create", "--snapshotter", SNAPSHOTTER, reference, "holder")
    mounts = first_pull.containerd.ctr("snapshots", "--snapshotter", SNAPSHOTTER, "mounts", "/m", "holder").stdout
    lowers = mounts.split("lowerdir=")[1].split()[0].split(",")[0].split(":")
    assert [os.path.realpath(lower) for lower in lowers[1:]] == [chain_dir(str(first_pull.layout), ids[-1])]
    assert first_pull.foreign_outcomes()["chain"] == 4  # layers 0, 2, 3 and 4
    served = first_pull.listing(reference, "c1")
    absent_everywhere(served)
    assert served == first_pull.plain_listing(reference)
