"""Adopted layers really mount: overlayfs follows the `fs` symlink; writes land in the upper dir only."""

from __future__ import annotations

import subprocess

import pytest

from snapmux.adapters.overlay.snapshotter import OverlaySnapshotter
from tests.integration.conftest import require_root

pytestmark = pytest.mark.integration


def mount(m, target) -> None:
    subprocess.run(["mount", "-t", m.type, "-o", ",".join(m.options), m.source, str(target)], check=True)


async def test_overlay_and_view_over_an_adopted_source(tmp_path):
    require_root()
    source = tmp_path / "cvmfs" / "layer"
    (source / "etc").mkdir(parents=True)
    (source / "etc" / "hello").write_text("from cvmfs\n")
    (source / ".cvmfscatalog").touch()  # CVMFS's nested-catalog marker, as DUCC leaves it
    snapshotter = await OverlaySnapshotter.open(str(tmp_path / "root"))
    target, view_target = tmp_path / "mnt", tmp_path / "view"
    target.mkdir()
    view_target.mkdir()
    try:
        await snapshotter.adopt("layer", "", {}, str(source))
        [rw] = await snapshotter.prepare("rw", "layer")
        [ro] = await snapshotter.view("ro", "layer")
        # a read-only overlay, not a bind: the catalog marker must stay hidden
        assert ro.type == "overlay" and not any(o.startswith("upperdir=") for o in ro.options)
        mount(rw, target)
        mount(ro, view_target)
        try:
            assert (target / "etc" / "hello").read_text() == "from cvmfs\n"
            assert (view_target / "etc" / "hello").read_text() == "from cvmfs\n"
            assert not (target / ".cvmfscatalog").exists() and not (view_target / ".cvmfscatalog").exists()
            assert subprocess.run(["touch", str(view_target / "x")], capture_output=True).returncode != 0
            (target / "etc" / "hello").write_text("changed\n")
            (target / "new").write_text("x")
        finally:
            subprocess.run(["umount", str(target)], check=True)
            subprocess.run(["umount", str(view_target)], check=True)
        assert (source / "etc" / "hello").read_text() == "from cvmfs\n"
        assert not (source / "new").exists()
        assert (await snapshotter.usage("rw")).inodes >= 3
        await snapshotter.commit("rw-done", "rw")
        await snapshotter.remove("ro")
        await snapshotter.remove("rw-done")
        await snapshotter.remove("layer")
        await snapshotter.cleanup()
        assert (source / "etc" / "hello").exists()
    finally:
        await snapshotter.close()
