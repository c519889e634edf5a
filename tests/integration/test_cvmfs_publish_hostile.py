"""A real `cvmfs-snapshotter publish` (as root, as in production) on crafted layers.

Each image is a good layer then a hostile one whose symlinks point into a "host" sentinel
tree. The publish must fail with one line naming the entry, leave every path of the sentinel
exactly as it was (type, mode, owner, times, content, xattrs), and leave no trace of the
hostile layer in the target: no layer directory, no `.tmp-*`, no image metadata.
"""

from __future__ import annotations

import glob
import os
import subprocess
import tarfile

import pytest

from snapmux.adapters.cvmfs.layers import CvmfsLayerStore, parse_digest
from tests.integration.conftest import require_binaries
from tests.support.hostile_tars import Sentinel, info, tar_bytes, write_raw_layer
from tests.support.images import LAYER_GZIP, Descriptor, file, write_image, write_layer

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(os.geteuid() != 0, reason="the publisher runs as root; so does the attack")]

DIR, SYM, LNK = tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE

HOSTILE = {
    "dir-then-symlink-to-a-host-file": (lambda host: [info("d", DIR, 0o4777, uid=4242),
                                                      info("d", SYM, linkname=host.path("file"))], r"'d' (symlink)"),
    "dir-then-symlink-to-a-host-dir": (lambda host: [info("d", DIR, 0o1777), info("d", SYM, linkname=host.path("dir")),
                                                     info("d/planted", data=b"x")], r"'d' (symlink)"),
    "whiteout-through-a-symlink": (lambda host: [info("s", SYM, linkname=host.path("dir")), info("s/.wh.inner")],
                                   "'s/.wh.inner' (file)"),
    "opaque-through-a-symlink": (lambda host: [info("s", SYM, linkname=host.path("dir")), info("s/.wh..wh..opq")],
                                 "'s/.wh..wh..opq' (file)"),
    "hardlink-through-a-symlink": (lambda host: [info("s", SYM, linkname=host.path()), info("h", LNK,
                                                                                           linkname="s/secret")],
                                   "'h' (hard link)"),
    "overlay-xattr": (lambda host: [info("f", data=b"x", xattrs={"trusted.overlay.redirect": "/etc"})], "'f' (file)"),
    "block-device": (lambda host: [info("sda", tarfile.BLKTYPE, 0o666, devmajor=8, devminor=0)],
                     "'sda' (block device)"),
}


@pytest.fixture
def host(tmp_path):
    return Sentinel.create(str(tmp_path / "host"))


def hostile_image(tmp_path, host, case):
    layout = str(tmp_path / "oci")
    good = write_layer(layout, [file("ok.txt", "fine")])
    members, _ = HOSTILE[case]
    bad = write_raw_layer(layout, tar_bytes(members(host)))
    return write_image(layout, "t", [good, bad], ["/ok.txt"]), good, bad


def publish(*args):
    return subprocess.run(["cvmfs-snapshotter", "publish", *args], capture_output=True, text=True, timeout=120)


def said(done) -> list[str]:
    """What the publisher said on stderr besides its per-layer progress (`layer <digest>: ...`)."""
    return [line for line in done.stderr.strip().splitlines() if not line.startswith("layer sha256:")]


def archive_of(layout, path):
    with tarfile.open(path, "w") as tar:
        for name in sorted(os.listdir(layout)):
            tar.add(os.path.join(layout, name), arcname=name)
    return path


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_layer_fails_the_publish_by_name_and_touches_nothing_outside(tmp_path, host, case):
    require_binaries("cvmfs-snapshotter")
    image, good, bad = hostile_image(tmp_path, host, case)
    target = tmp_path / "layout"
    before = host.snapshot()
    done = publish("--target", str(target), image.oci_ref)
    assert host.snapshot() == before, "publish changed a path outside its target"
    assert done.returncode == 1 and "0 image(s) ok, 1 failed" in done.stdout
    lines = said(done)
    assert len(lines) == 1 and lines[0].startswith(f"publish failed: {image.oci_ref} [")
    assert "Error" not in lines[0]  # no Python class name in what the operator reads
    assert HOSTILE[case][1] in lines[0]
    store = CvmfsLayerStore(str(target))
    assert store.check_now(parse_digest(good.digest)).published  # a good layer before it stays good
    assert not os.path.lexists(store.layer_dir(parse_digest(bad.digest)))
    assert glob.glob(str(target / ".layers" / "*" / ".tmp-*")) == []
    assert not (target / ".metadata" / "manifests").exists()  # the image's metadata waits for all its layers


def test_a_layer_digest_that_would_be_a_path_is_refused_before_anything_is_written(tmp_path, host):
    require_binaries("cvmfs-snapshotter")
    layout = str(tmp_path / "oci")
    escape = os.path.relpath(host.path("planted"), str(tmp_path / "layout" / ".layers" / "xx"))
    traversal = Descriptor(LAYER_GZIP, f"sha256:{escape}", 10)
    image = write_image(layout, "t", [write_layer(layout, [file("ok.txt", "fine")]), traversal], ["/ok.txt"])
    before = host.snapshot()
    done = publish("--target", str(tmp_path / "layout"), image.oci_ref)
    assert done.returncode == 1 and "is not sha256:<64 lowercase hex>" in done.stderr
    assert len(said(done)) == 1 and host.snapshot() == before
    assert not (tmp_path / "layout" / ".layers").exists() or glob.glob(str(tmp_path / "layout" / ".layers" / "*")) == []


def test_the_same_from_an_oci_archive_and_a_rerun_changes_nothing_either(tmp_path, host):
    require_binaries("cvmfs-snapshotter")
    image, _, bad = hostile_image(tmp_path, host, "dir-then-symlink-to-a-host-file")
    archive = archive_of(image.layout, str(tmp_path / "image.tar"))
    target = tmp_path / "layout"
    before = host.snapshot()
    for _ in range(2):
        done = publish("--target", str(target), f"oci-archive:{archive}:t")
        assert done.returncode == 1 and "'d' (symlink) would replace a directory" in done.stderr
    assert host.snapshot() == before
    assert not os.path.lexists(CvmfsLayerStore(str(target)).layer_dir(parse_digest(bad.digest)))
