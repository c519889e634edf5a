"""Issue #13 (Must show): a real containerd pulls an image of 50+ layers that `cvmfs-snapshotter
publish` wrote with its DUCC chains, downloads no layer blob, and mounts a container over it with
one lower directory for the whole image.

The publisher runs as the real CLI (`cvmfs-snapshotter publish --plain-http --target`) against a
docker-registry on loopback; cvmfs-snapshotter serves that layout to containerd 1.6, which pulls
with `ctr-remote images rpull`. Checked: the registry's access log (no layer GET since the pull
began), the container's filesystem (equal to a plain overlayfs pull's, deleted files absent),
and `ctr snapshots mounts` of the container's active snapshot: `lowerdir=` is exactly the
catalog hider (`lowers.stack` puts it over any adopted layer) and the image's top chain.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess

import pytest

from snapmux.adapters.cvmfs.chains import chain_dir, chain_ids
from snapmux.adapters.overlay.lowers import HIDER_DIR
from tests.integration.conftest import require_binaries, require_root
from tests.integration.test_cvmfs_first_pull import SNAPSHOTTER, FirstPull
from tests.support.containerd import Containerd
from tests.support.images import BuiltImage, busybox_base, directory, file, opaque, whiteout, write_image, write_layer
from tests.support.registry import Registry

pytestmark = pytest.mark.integration

DEPTH = 60
DELETED_BY = 30
"""The layer that deletes a file of the bottom layer (far below it, not just the one under it)."""
OPAQUE_AT = 45
"""The layer that makes a directory of the bottom layer opaque."""


def chained_image(layout: str, depth: int = DEPTH) -> BuiltImage:
    """busybox with /data, then `depth - 1` small layers: each adds `deep/keep-i` and `deep/gone-i`
    and deletes `deep/gone-(i-1)`; layer DELETED_BY also deletes `/data/base-gone.txt`, layer
    OPAQUE_AT replaces `/data/opq` (an opaque directory with one new file)."""
    if os.path.exists(layout):
        shutil.rmtree(layout)
    descriptors = [write_layer(layout, [*busybox_base(), directory("data"), file("data/base-gone.txt", "gone\n"),
                                        file("data/base-keep.txt", "kept\n"), directory("data/opq"),
                                        file("data/opq/old.txt", "old\n"), directory("deep"),
                                        file("deep/gone-0", "0\n")])]
    for index in range(1, depth):
        entries = [directory("deep"), file(f"deep/keep-{index}", f"{index}\n"), file(f"deep/gone-{index}", "x\n"),
                   whiteout(f"deep/gone-{index - 1}")]
        if index == DELETED_BY:
            entries.append(whiteout("data/base-gone.txt"))
        if index == OPAQUE_AT:
            entries += [opaque("data/opq"), directory("data/opq"), file("data/opq/new.txt", "new\n")]
        descriptors.append(write_layer(layout, entries))
    return write_image(layout, "v1", descriptors, ["/bin/sh"])


@pytest.fixture
def chain_pull(tmp_path, daemons):
    require_root()
    require_binaries("containerd", "ctr", "ctr-remote", "runc", "skopeo", "docker-registry", "cvmfs-snapshotter")
    with Registry.start(tmp_path / "registry") as registry, contextlib.ExitStack() as stack:
        built = FirstPull(tmp_path, registry, daemons)
        built.start_snapshotter()
        built.containerd = stack.enter_context(Containerd.start(tmp_path / "containerd", {SNAPSHOTTER: built.socket}))
        yield built


def publish_with_the_cli(target: str, reference: str) -> None:
    argv = [shutil.which("cvmfs-snapshotter") or "cvmfs-snapshotter", "publish", "--plain-http", "--target",
            target, reference]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{argv}:\n{done.stdout}\n{done.stderr}"


def regular_files(listing: str) -> list[str]:
    return sorted(line.split()[0] for line in listing.splitlines() if " regular " in line and "/proc/" not in line
                  and line.startswith(("./deep/", "./data/")))


def test_a_chain_published_image_of_sixty_layers_pulls_nothing_and_mounts_one_lower(chain_pull, tmp_path):
    image = chained_image(str(tmp_path / "oci"))
    assert len(image.layers) == DEPTH
    reference = chain_pull.registry.push(image.layout, image.tag, "snapmux/chained:v1")
    publish_with_the_cli(str(chain_pull.layout), reference)
    top_chain = chain_dir(str(chain_pull.layout), chain_ids([layer.digest for layer in image.layers])[-1])
    assert os.path.isdir(top_chain)  # the publisher wrote the image's chains

    mark = chain_pull.rpull(reference)
    assert chain_pull.fetched(image, mark) == []
    assert chain_pull.foreign_outcomes().get("chain") == DEPTH  # every layer's Prepare adopted its chain

    chain_pull.containerd.ctr("containers", "create", "--snapshotter", SNAPSHOTTER, reference, "holder")
    mounts = chain_pull.containerd.ctr("snapshots", "--snapshotter", SNAPSHOTTER, "mounts", "/m", "holder").stdout
    options = mounts.split(" -o ", 1)[1].split()[0].split(",")
    lowerdirs = [option.removeprefix("lowerdir=") for option in options if option.startswith("lowerdir=")]
    assert len(lowerdirs) == 1, mounts
    lowers = lowerdirs[0].split(":")
    assert [os.path.realpath(lower) for lower in lowers] == [
        os.path.realpath(chain_pull.root / "snapshots" / HIDER_DIR), top_chain], mounts
    assert any(option.startswith("upperdir=") for option in options)  # the container's own layer, above them

    served = chain_pull.listing(reference, "c1")
    files = regular_files(served)
    assert files == sorted([*(f"./deep/keep-{index}" for index in range(1, DEPTH)), f"./deep/gone-{DEPTH - 1}",
                            "./data/base-keep.txt", "./data/opq/new.txt"])
    assert "./data/base-gone.txt" not in served and "./data/opq/old.txt" not in served
    assert ".wh." not in served and ".cvmfscatalog" not in served
    assert served == chain_pull.plain_listing(reference)
