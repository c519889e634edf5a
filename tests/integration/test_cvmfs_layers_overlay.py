"""CvmfsSnapshotter over the real OverlaySnapshotter, with real overlay mounts (root).

The containerd end-to-end runs are in test_cvmfs_layers_containerd.py; this file pins
what the kernel sees: published whiteouts hide deleted files, a repeated layer mounts,
a single remote layer views, a vanished layer is Unavailable and survives a restart.
"""

from __future__ import annotations

import contextlib
import os
import subprocess

import pytest

from snapmux.adapters.cvmfs.layers import CvmfsLayerStore, parse_digest
from snapmux.adapters.cvmfs.snapshotter import CvmfsSnapshotter
from snapmux.adapters.overlay.snapshotter import OverlaySnapshotter
from snapmux.domain.errors import AlreadyExistsError, UnavailableError
from snapmux.domain.labels import CRI_DIGEST_LABEL, REF_LABEL
from tests.fakes.cvmfs_outcomes import OutcomeSpy
from tests.integration.conftest import require_root
from tests.support.containerd import unmount_all_under
from tests.support.images import WHITEOUT_IMAGE_LISTING, directory, file, whiteout_image, write_image, write_layer
from tests.support.publishing import publish_or_raise

pytestmark = pytest.mark.integration


@pytest.fixture
def layout(tmp_path):
    require_root()
    image = whiteout_image(str(tmp_path / "oci"))
    publish_or_raise(tmp_path / "layout", image.oci_ref)
    return image, tmp_path / "layout"


@pytest.fixture
def spies():
    """The OutcomeSpy under each snapshotter `opened` opens, in order."""
    return []


@pytest.fixture
async def opened(tmp_path, spies):
    """Opens (and reopens, for restarts) the snapshotter on one root; unmounts everything after."""
    opened: list[OverlaySnapshotter] = []

    async def open_one():
        while opened:  # a restart: the previous process is gone (and with it its lock on the root)
            await opened.pop().close()
        inner = await OverlaySnapshotter.open(str(tmp_path / "root"))
        opened.append(inner)
        spies.append(OutcomeSpy(inner))
        return CvmfsSnapshotter(spies[-1], CvmfsLayerStore(str(tmp_path / "layout")))

    yield open_one
    unmount_all_under(tmp_path)
    for inner in opened:
        with contextlib.suppress(Exception):
            await inner.close()


async def unpack_remote(cvmfs, digests):
    parent = ""
    for index, digest in enumerate(digests):
        target = f"chain-{index}"
        with pytest.raises(AlreadyExistsError):
            await cvmfs.prepare(f"extract-{index}", parent, {REF_LABEL: target, CRI_DIGEST_LABEL: digest})
        parent = target
    return parent


def mount(mounts, target):
    target.mkdir(parents=True, exist_ok=True)
    (only,) = mounts
    subprocess.run(["mount", "-t", only.type, "-o", ",".join(only.options), only.source, str(target)], check=True)
    return target


def files_under(root, sub="data"):
    return " ".join(sorted("/" + os.path.relpath(os.path.join(d, f), root)
                           for d, _, fs in os.walk(root / sub) for f in fs))


async def test_container_sees_files_and_not_what_an_upper_layer_deleted(layout, opened, spies, tmp_path):
    image, _ = layout
    cvmfs = await opened()
    top = await unpack_remote(cvmfs, [layer.digest for layer in image.layers])
    rootfs = mount(await cvmfs.prepare("container", top), tmp_path / "m")
    try:
        assert files_under(rootfs) == WHITEOUT_IMAGE_LISTING
        assert (rootfs / "data" / "keep.txt").read_text() == "kept from layer 1\n"
        (rootfs / "data" / "written").write_text("rw")  # the container's own upper layer
    finally:
        subprocess.run(["umount", str(rootfs)], check=True)
    assert spies[-1].counters.remote == 3


async def test_same_layer_twice_in_a_chain_mounts(layout, opened, tmp_path):
    image, base = layout
    extra = write_layer(image.layout, [directory("more"), file("more/x", "x")])
    twice = write_image(image.layout, "twice", [*image.layers, extra, image.layers[1]], ["/bin/true"])
    publish_or_raise(base, twice.oci_ref)
    cvmfs = await opened()
    top = await unpack_remote(cvmfs, [layer.digest for layer in twice.layers])
    rootfs = mount(await cvmfs.view("view", top), tmp_path / "m")
    try:
        assert (rootfs / "more" / "x").read_text() == "x"
        assert files_under(rootfs) == WHITEOUT_IMAGE_LISTING
    finally:
        subprocess.run(["umount", str(rootfs)], check=True)


async def test_view_of_one_remote_layer(layout, opened, tmp_path):
    image, _ = layout
    cvmfs = await opened()
    bottom = await unpack_remote(cvmfs, [image.layers[0].digest])
    rootfs = mount(await cvmfs.view("view", bottom), tmp_path / "m")
    try:
        assert (rootfs / "data" / "gone.txt").read_text() == "deleted by layer 3\n"
        assert subprocess.run(["touch", str(rootfs / "nope")], capture_output=True).returncode != 0
    finally:
        subprocess.run(["umount", str(rootfs)], check=True)


async def test_vanished_layer_is_unavailable_and_survives_restart(layout, opened, tmp_path):
    image, base = layout
    other = whiteout_image(str(tmp_path / "other"), variant="other")
    publish_or_raise(base, other.oci_ref)
    cvmfs = await opened()
    top = await unpack_remote(cvmfs, [layer.digest for layer in image.layers])
    await cvmfs.prepare("container", top)
    store = CvmfsLayerStore(str(base))
    vanished = store.layer_path(parse_digest(image.layers[1].digest))
    os.rename(vanished, vanished + ".away")
    with pytest.raises(UnavailableError):
        await cvmfs.mounts("container")

    restarted = await opened()
    report = await restarted.restore()
    assert report.unavailable == ("chain-1",) and report.available == 2
    assert {info.name async for info in restarted.walk()} >= {"chain-0", "chain-1", "chain-2", "container"}
    with pytest.raises(UnavailableError):
        await restarted.mounts("container")
    other_top = await unpack_remote_named(restarted, other)
    rootfs = mount(await restarted.prepare("other-container", other_top), tmp_path / "m")
    try:
        assert files_under(rootfs) == WHITEOUT_IMAGE_LISTING
    finally:
        subprocess.run(["umount", str(rootfs)], check=True)
    os.rename(vanished + ".away", vanished)
    assert (await restarted.mounts("container"))[0].type == "overlay"


async def unpack_remote_named(cvmfs, image):
    parent = ""
    for index, layer in enumerate(image.layers):
        target = f"other-{index}"
        with pytest.raises(AlreadyExistsError):
            await cvmfs.prepare(f"x-{index}", parent, {REF_LABEL: target, CRI_DIGEST_LABEL: layer.digest})
        parent = target
    return parent


async def test_removing_remote_snapshots_never_touches_the_layout(layout, opened):
    image, base = layout
    cvmfs = await opened()
    top = await unpack_remote(cvmfs, [layer.digest for layer in image.layers])
    await cvmfs.prepare("container", top)
    for key in ("container", top, "chain-1", "chain-0"):
        await cvmfs.remove(key)
    await cvmfs.cleanup()
    assert [info async for info in cvmfs.walk()] == []
    bottom = CvmfsLayerStore(str(base)).layer_path(parse_digest(image.layers[0].digest))
    assert os.path.isfile(os.path.join(bottom, "bin", "busybox"))
    assert (open(os.path.join(bottom, "data", "keep.txt")).read()) == "kept from layer 1\n"
