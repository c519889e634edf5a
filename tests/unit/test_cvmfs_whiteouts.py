"""Whiteout shadows of foreign layers: what one scan writes, that only a complete scan is used,
and that Prepare falls back, queues one scan, and serves the layer once the scan is done."""

from __future__ import annotations

import json
import os
import stat
import threading

import pytest

from snapmux.adapters.cvmfs.layers import CvmfsLayerStore
from snapmux.adapters.cvmfs.snapshotter import CvmfsSnapshotter
from snapmux.adapters.cvmfs.whiteouts import READY, ScanStopped, ShadowCache
from snapmux.domain.errors import AlreadyExistsError
from snapmux.domain.labels import CRI_DIGEST_LABEL, REF_LABEL
from tests.fakes.cvmfs_outcomes import OutcomeSpy
from tests.support.requirements import lacking_root, require
from tests.support.scans import CountingScanner, scans_done
from tests.unit.test_cvmfs_snapshotter import AdoptingFake


@pytest.fixture(autouse=True)
def _root():
    require(*lacking_root("0/0 char devices and trusted.* xattrs"))


A, B = ("a" * 64, "b" * 64)


def foreign_layer(base, hex_digest, files):
    """A layer as unpacked.cern.ch stores it: OCI `.wh.` files kept as plain files, no marker."""
    layerfs = base / ".layers" / hex_digest[:2] / hex_digest / "layerfs"
    layerfs.mkdir(parents=True)
    for path in files:
        (layerfs / path).parent.mkdir(parents=True, exist_ok=True)
        (layerfs / path).write_text("")
    return layerfs


def is_whiteout(path) -> bool:
    st = os.lstat(path)
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0)


def tree(root) -> set[str]:
    return {os.path.relpath(os.path.join(d, n), root) for d, dirs, files in os.walk(root) for n in dirs + files}


@pytest.fixture
def cache(tmp_path):
    return ShadowCache(str(tmp_path / "root"), userxattr=False)


def test_scan_writes_whiteouts_opaque_dirs_and_hides_the_markers(tmp_path, cache):
    layerfs = foreign_layer(
        tmp_path / "layout", A, ["etc/.wh.gone", "usr/share/doc/.wh..wh..opq", "usr/share/doc/new"]
    )
    os.chmod(layerfs / "usr" / "share", 0o750)
    os.utime(layerfs / "usr", (1_000_000, 1_000_000))
    shadows = cache.build(A, str(layerfs))
    assert cache.lookup(A) == shadows and not shadows.clean
    assert tree(shadows.lower) == {"etc", "etc/gone", "usr", "usr/share", "usr/share/doc"}
    assert is_whiteout(os.path.join(shadows.lower, "etc", "gone"))
    assert os.getxattr(os.path.join(shadows.lower, "usr/share/doc"), "trusted.overlay.opaque") == b"y"
    assert tree(shadows.upper) == {
        "etc", "etc/.wh.gone", "usr", "usr/share", "usr/share/doc", "usr/share/doc/.wh..wh..opq"}
    assert all(is_whiteout(os.path.join(shadows.upper, p)) for p in ("etc/.wh.gone", "usr/share/doc/.wh..wh..opq"))
    # upper/ is the topmost layer: its directories look like the layer's own
    assert stat.S_IMODE(os.stat(os.path.join(shadows.upper, "usr/share")).st_mode) == 0o750
    assert os.stat(os.path.join(shadows.upper, "usr")).st_mtime == 1_000_000
    with open(os.path.join(shadows.path, READY)) as handle:
        assert json.load(handle) == {"whiteouts": 1, "opaque": 1, "hidden": 2, "clean": False}


def test_userxattr_marks_opaque_dirs_in_the_user_namespace(tmp_path):
    layerfs = foreign_layer(tmp_path / "layout", A, ["d/.wh..opq"])
    shadows = ShadowCache(str(tmp_path / "root"), userxattr=True).build(A, str(layerfs))
    assert os.getxattr(os.path.join(shadows.lower, "d"), "user.overlay.opaque") == b"y"


def test_a_layer_without_whiteouts_is_clean(tmp_path, cache):
    layerfs = foreign_layer(tmp_path / "layout", A, ["etc/hosts", "usr/bin/sh"])
    assert cache.build(A, str(layerfs)).clean
    assert cache.lookup(A).clean


def test_a_failed_or_stopped_scan_leaves_nothing_usable(tmp_path, cache, monkeypatch):
    layerfs = foreign_layer(tmp_path / "layout", A, ["etc/.wh.gone"])
    stop = threading.Event()
    stop.set()
    with pytest.raises(ScanStopped):
        cache.build(A, str(layerfs), stop)
    def disk_full(*_):
        raise OSError("No space left on device")

    monkeypatch.setattr("snapmux.adapters.cvmfs.whiteouts._write_ready", disk_full)
    with pytest.raises(OSError):
        cache.build(A, str(layerfs))
    assert cache.lookup(A) is None and os.listdir(cache.dir) == []


def test_a_killed_scan_or_a_damaged_result_is_never_used(tmp_path, cache):
    layerfs = foreign_layer(tmp_path / "layout", A, ["etc/.wh.gone"])
    os.makedirs(os.path.join(cache.dir, f".tmp-{A}-killed", "upper"))  # what kill -9 mid-scan leaves
    assert cache.lookup(A) is None
    cache.purge_partial()
    assert os.listdir(cache.dir) == []
    shadows = cache.build(A, str(layerfs))
    os.rename(shadows.lower, tmp_path / "lost")
    assert cache.lookup(A) is None  # partial: scanned again, and the new result replaces it
    assert cache.build(A, str(layerfs)) == cache.lookup(A)


def unpack_labels(target, hex_digest):
    return {REF_LABEL: target, CRI_DIGEST_LABEL: f"sha256:{hex_digest}"}


async def test_prepare_falls_back_queues_one_scan_then_adopts_with_shadows(tmp_path, cache, monkeypatch):
    foreign_layer(tmp_path / "layout", A, ["etc/.wh.gone"])
    foreign_layer(tmp_path / "layout", B, ["etc/hosts"])
    scanner = CountingScanner(cache)
    fake = AdoptingFake(str(tmp_path / "fake"))
    counted = OutcomeSpy(fake)
    cvmfs = CvmfsSnapshotter(counted, CvmfsLayerStore(str(tmp_path / "layout"), "scan", scanner))
    release, build = threading.Event(), cache.build
    monkeypatch.setattr(cache, "build", lambda *args: (release.wait(30), build(*args))[1])  # held until we look
    try:
        assert await cvmfs.prepare("k1", "", unpack_labels("c1", A))  # fell back: mounts, no adoption
        assert await cvmfs.prepare("k2", "", unpack_labels("c1", A))
        assert scanner.started == 1 and list(scanner.scans) == [A] and fake.adopted == {}
        release.set()
        await scans_done(scanner)
        with pytest.raises(AlreadyExistsError):
            await cvmfs.prepare("k3", "", unpack_labels("c1", A))
        assert fake.adopted == {"c1": str(tmp_path / "layout" / ".layers" / "aa" / A / "layerfs")}
        assert fake.shadows == {"c1": cache.path(A)}
        assert await cvmfs.prepare("k4", "c1", unpack_labels("c2", B))  # clean layer: scanned, then no shadows
        await scans_done(scanner)
        with pytest.raises(AlreadyExistsError):
            await cvmfs.prepare("k5", "c1", unpack_labels("c2", B))
        assert fake.shadows["c2"] == "" and scanner.started == 2
        assert (counted.counters.remote, counted.counters.fallback) == (2, 3)
    finally:
        release.set()
        await scanner.close()


async def test_a_failed_scan_can_be_queued_again(tmp_path, cache, monkeypatch):
    foreign_layer(tmp_path / "layout", A, ["etc/.wh.gone"])
    scanner = CountingScanner(cache)
    store = CvmfsLayerStore(str(tmp_path / "layout"), "scan", scanner)
    build = cache.build
    monkeypatch.setattr(cache, "build", lambda *_: (_ for _ in ()).throw(OSError("I/O error on CVMFS")))
    try:
        assert await store.servable(A) is None
        await scans_done(scanner)
        assert cache.lookup(A) is None and scanner.scans == {}  # logged, no result, not stuck
        monkeypatch.setattr(cache, "build", build)
        assert await store.servable(A) is None
        await scans_done(scanner)
        assert (await store.servable(A)).shadows == cache.path(A) and scanner.started == 2
    finally:
        await scanner.close()


def test_a_deleted_directory_made_anew_with_markers_inside_scans(tmp_path, cache):
    """`d/.wh.x` deletes the lower layers' x, and the layer's own new `d/x/` holds markers too (a
    tar of `rm -rf x; mkdir x` over an x that had deletions): x's lowers are hidden by the first
    whiteout, so the markers inside are only hidden themselves."""
    layerfs = foreign_layer(tmp_path / "layout", A, ["d/.wh.x", "d/x/new", "d/x/.wh.y", "d/x/sub/.wh..wh..opq"])
    shadows = cache.build(A, str(layerfs))
    assert tree(shadows.lower) == {"d", "d/x"} and is_whiteout(os.path.join(shadows.lower, "d", "x"))
    assert {"d/.wh.x", "d/x/.wh.y", "d/x/sub/.wh..wh..opq"} <= tree(shadows.upper)
    assert all(is_whiteout(os.path.join(shadows.upper, p)) for p in ("d/.wh.x", "d/x/.wh.y", "d/x/sub/.wh..wh..opq"))
    with open(os.path.join(shadows.path, READY)) as handle:
        assert json.load(handle) == {"whiteouts": 1, "opaque": 0, "hidden": 3, "clean": False}
