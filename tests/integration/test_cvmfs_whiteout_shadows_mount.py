"""Whiteout shadows on a real overlay mount, in the documented order `upper:layerfs:lower:<below>`:
what overlayfs shows for deletions the scan of a foreign layer turned into shadows."""

from __future__ import annotations

import os
import subprocess

import pytest

from snapmux.adapters.cvmfs.whiteouts import ShadowCache
from snapmux.adapters.overlay.mounts import MountOptions
from tests.integration.conftest import require_root
from tests.support.containerd import unmount_all_under

pytestmark = pytest.mark.integration


def layer(base, files: dict[str, str]):
    for path, text in files.items():
        os.makedirs(os.path.dirname(base / path), exist_ok=True)
        (base / path).write_text(text)
    return base


@pytest.fixture
def mounted(tmp_path):
    require_root()
    target = tmp_path / "merged"
    target.mkdir()

    def mount(lowerdirs):
        subprocess.run(["mount", "-t", "overlay", "-o", "ro,lowerdir=" + ":".join(map(str, lowerdirs)),
                        "overlay", str(target)], check=True)
        return target

    yield mount
    unmount_all_under(tmp_path)


def visible(root) -> set[str]:
    return {os.path.relpath(os.path.join(d, n), root) for d, dirs, files in os.walk(root) for n in dirs + files}


def test_a_directory_deleted_and_made_anew_with_markers_inside_shows_only_its_new_content(tmp_path, mounted):
    below = layer(tmp_path / "one", {"d/keep": "1", "d/x/old": "1", "d/x/y": "1", "d/x/sub/z": "1"})
    above = layer(tmp_path / "two", {"d/.wh.x": "", "d/x/new": "2", "d/x/.wh.y": "", "d/x/sub/.wh..wh..opq": ""})
    shadows = ShadowCache(str(tmp_path / "root"), MountOptions.detect().userxattr).build("b" * 64, str(above))
    rootfs = mounted([shadows.upper, above, shadows.lower, below])
    assert visible(rootfs) == {"d", "d/keep", "d/x", "d/x/new", "d/x/sub"}
    assert (rootfs / "d" / "x" / "new").read_text() == "2"
