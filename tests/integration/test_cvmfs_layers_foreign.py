"""Foreign layers (stored as unpacked.cern.ch stores them: OCI `.wh.` files kept as plain files)
served with whiteout shadows, over real overlay mounts (root).

The first Prepare of each layer falls back and queues a scan; once scanned, the layers are
adopted and a container sees the image as containerd would unpack it: the file the top layer
deletes is gone, the directory it replaces holds only the new file, no `.wh.` file shows.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import subprocess
import tarfile

import pytest

from snapmux.adapters.cvmfs.layers import CvmfsLayerStore, parse_digest
from snapmux.adapters.cvmfs.snapshotter import CvmfsSnapshotter
from snapmux.adapters.cvmfs.whiteouts import ShadowCache
from snapmux.adapters.overlay.mounts import MountOptions
from snapmux.adapters.overlay.snapshotter import OverlaySnapshotter
from snapmux.domain.errors import AlreadyExistsError, UnavailableError
from snapmux.domain.labels import CRI_DIGEST_LABEL, REF_LABEL
from tests.fakes.cvmfs_outcomes import OutcomeSpy
from tests.integration.conftest import require_root
from tests.support.containerd import unmount_all_under
from tests.support.images import WHITEOUT_IMAGE_LISTING, whiteout_image
from tests.support.scans import CountingScanner, scans_done

pytestmark = pytest.mark.integration


def store_foreign(image, base) -> None:
    """Unpacks each layer tar as-is (no whiteout conversion), as the unpacked.cern.ch layout holds it."""
    for layer in image.layers:
        hex_digest = parse_digest(layer.digest)
        layerfs = os.path.join(base, ".layers", hex_digest[:2], hex_digest, "layerfs")
        os.makedirs(layerfs)
        with gzip.open(os.path.join(image.layout, "blobs", "sha256", hex_digest)) as blob:
            with tarfile.open(fileobj=blob, mode="r|") as tar:
                tar.extractall(layerfs, numeric_owner=True, filter="tar")


@pytest.fixture
def layout(tmp_path):
    require_root()
    image = whiteout_image(str(tmp_path / "oci"))
    store_foreign(image, str(tmp_path / "layout"))
    return image, tmp_path / "layout"


@pytest.fixture
def spies():
    """The OutcomeSpy under each snapshotter `opened` opens, in order."""
    return []


@pytest.fixture
async def opened(tmp_path, spies):
    """Opens (and reopens, for restarts) the snapshotter and its scanner on one root."""
    opened: list[tuple[OverlaySnapshotter, CountingScanner]] = []

    async def open_one(foreign="scan"):
        while opened:
            inner, scanner = opened.pop()
            await scanner.close()
            await inner.close()
        inner = await OverlaySnapshotter.open(str(tmp_path / "root"))
        scanner = CountingScanner(ShadowCache(inner.layout.root, MountOptions.detect().userxattr))
        await scanner.start()
        opened.append((inner, scanner))
        spies.append(OutcomeSpy(inner))
        return CvmfsSnapshotter(spies[-1], CvmfsLayerStore(str(tmp_path / "layout"), foreign, scanner)), scanner

    yield open_one
    unmount_all_under(tmp_path)
    for inner, scanner in opened:
        with contextlib.suppress(Exception):
            await scanner.close()
            await inner.close()


def unpack_labels(index, layer):
    return {REF_LABEL: f"chain-{index}", CRI_DIGEST_LABEL: layer.digest}


async def first_sight(cvmfs, scanner, image, counted):
    """What containerd's first pull does here: every layer falls back (unpacked locally) and is queued."""
    for index, layer in enumerate(image.layers):
        assert await cvmfs.prepare(f"first-{index}", "", unpack_labels(index, layer))
        await cvmfs.remove(f"first-{index}")
    await scans_done(scanner)
    assert scanner.started == len(image.layers) and counted.counters.remote == 0
    for layer in image.layers:
        assert scanner.lookup(parse_digest(layer.digest)) is not None


async def unpack_remote(cvmfs, image):
    parent = ""
    for index, layer in enumerate(image.layers):
        with pytest.raises(AlreadyExistsError):
            await cvmfs.prepare(f"extract-{index}", parent, unpack_labels(index, layer))
        parent = f"chain-{index}"
    return parent


@contextlib.contextmanager
def mounted(mounts, target):
    target.mkdir(parents=True, exist_ok=True)
    (only,) = mounts
    subprocess.run(["mount", "-t", only.type, "-o", ",".join(only.options), only.source, str(target)], check=True)
    try:
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=True)


def files_under(root, sub="data"):
    return " ".join(sorted("/" + os.path.relpath(os.path.join(d, f), root)
                           for d, _, fs in os.walk(root / sub) for f in fs))


def whiteout_files(root):
    return [os.path.join(d, n) for d, dirs, fs in os.walk(root) for n in dirs + fs if n.startswith(".wh.")]


async def test_scanned_foreign_layers_show_the_image_with_its_deletions(layout, opened, spies, tmp_path):
    image, _ = layout
    cvmfs, scanner = await opened()
    await first_sight(cvmfs, scanner, image, spies[-1])
    top = await unpack_remote(cvmfs, image)
    assert spies[-1].counters.remote == 3
    with mounted(await cvmfs.prepare("container", top), tmp_path / "m") as rootfs:
        assert files_under(rootfs) == WHITEOUT_IMAGE_LISTING
        assert not (rootfs / "data" / "gone.txt").exists() and not (rootfs / "data" / "dir" / "old.txt").exists()
        assert whiteout_files(rootfs) == []
        assert (rootfs / "data" / "keep.txt").read_text() == "kept from layer 1\n"
        assert (rootfs / "bin" / "busybox").is_file()
        (rootfs / "data" / "written").write_text("rw")  # the container's own upper layer
    with mounted(await cvmfs.view("view", top), tmp_path / "v") as rootfs:
        assert files_under(rootfs) == WHITEOUT_IMAGE_LISTING and whiteout_files(rootfs) == []


async def test_shadows_survive_a_restart_and_a_vanished_cache_is_never_used(layout, opened, spies, tmp_path):
    image, _ = layout
    cvmfs, scanner = await opened()
    await first_sight(cvmfs, scanner, image, spies[-1])
    top = await unpack_remote(cvmfs, image)
    await cvmfs.prepare("container", top)
    cvmfs, scanner = await opened()  # a restart: the shadows are in the metadata
    with mounted(await cvmfs.mounts("container"), tmp_path / "m") as rootfs:
        assert files_under(rootfs) == WHITEOUT_IMAGE_LISTING
    top_hex = parse_digest(image.layers[2].digest)
    shutil.rmtree(scanner.cache.path(top_hex))
    with pytest.raises(UnavailableError, match="whiteout shadows"):
        await cvmfs.mounts("container")
    # a new pull of that layer falls back and scans it again
    assert await cvmfs.prepare("again", "chain-1", {REF_LABEL: "chain-2b", CRI_DIGEST_LABEL: image.layers[2].digest})
    await scans_done(scanner)
    assert scanner.started == 1 and scanner.lookup(top_hex) is not None
    assert (await cvmfs.mounts("container"))[0].type == "overlay"


async def test_serving_foreign_layers_at_once_does_not_apply_deletions(layout, opened, tmp_path):
    """`foreign-layers = "serve"` (or `serve-foreign-layers = true`): no scan, served as stored."""
    image, _ = layout
    cvmfs, scanner = await opened("serve")
    top = await unpack_remote(cvmfs, image)
    with mounted(await cvmfs.prepare("container", top), tmp_path / "m") as rootfs:
        assert (rootfs / "data" / "gone.txt").exists() and whiteout_files(rootfs)
    assert scanner.started == 0


def drop_from_layout(base, layer) -> str:
    """The repository stops publishing a layer (CVMFS garbage collection, an NFS clean-up)."""
    hex_digest = parse_digest(layer.digest)
    shutil.rmtree(os.path.join(base, ".layers", hex_digest[:2], hex_digest))
    return hex_digest


async def test_cleanup_reclaims_the_shadows_of_a_layer_gone_from_the_layout(layout, opened, spies):
    image, base = layout
    cvmfs, scanner = await opened()
    await first_sight(cvmfs, scanner, image, spies[-1])
    gone = drop_from_layout(base, image.layers[2])
    await cvmfs.cleanup()
    assert not os.path.exists(scanner.cache.path(gone))
    assert sorted(os.listdir(scanner.cache.dir)) == sorted(parse_digest(layer.digest) for layer in image.layers[:2])
    for layer in image.layers[:2]:  # still in the layout: kept for the next pull
        assert scanner.lookup(parse_digest(layer.digest)) is not None


async def test_cleanup_keeps_the_shadows_a_snapshot_still_mounts(layout, opened, spies, tmp_path):
    image, base = layout
    cvmfs, scanner = await opened()
    await first_sight(cvmfs, scanner, image, spies[-1])
    top = await unpack_remote(cvmfs, image)
    gone = drop_from_layout(base, image.layers[2])
    await cvmfs.cleanup()
    assert scanner.lookup(gone) is not None  # chain-2 still uses them: unavailable now, usable if it returns
    await cvmfs.remove(top)
    await cvmfs.cleanup()
    assert not os.path.exists(scanner.cache.path(gone))
