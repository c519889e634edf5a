"""The whiteout scanner walks foreign layers that may hold hostile symlinks: it never follows one
out of the layer, nor copies attributes through one."""

from __future__ import annotations

import os

import pytest

from snapmux.adapters.cvmfs.whiteouts import ShadowCache, _ShadowWriter
from tests.support.hostile_extract import host, needs_root  # noqa: F401
from tests.support.hostile_tars import Sentinel

pytestmark = needs_root


def foreign(tmp_path, files):
    layerfs = tmp_path / "layout" / "layerfs"
    for name in files:
        (layerfs / name).parent.mkdir(parents=True, exist_ok=True)
        (layerfs / name).write_text("")
    return layerfs


def test_the_scanner_never_descends_a_symlink_out_of_the_layer(tmp_path, host):
    elsewhere = Sentinel.create(str(tmp_path / "elsewhere"))
    (tmp_path / "elsewhere" / "dir" / ".wh.victim").write_text("")
    before = elsewhere.snapshot()
    layerfs = foreign(tmp_path, ["etc/.wh.gone"])
    os.symlink(elsewhere.path("dir"), layerfs / "s")
    os.symlink(host.path("dir"), layerfs / ".wh.s-link")
    shadows = ShadowCache(str(tmp_path / "root"), userxattr=False).build("a" * 64, str(layerfs))
    assert not os.path.lexists(os.path.join(shadows.lower, "s")) and os.path.lexists(f"{shadows.lower}/etc/gone")
    assert os.path.lexists(f"{shadows.lower}/s-link") and elsewhere.snapshot() == before


def test_the_scanner_refuses_a_layer_root_that_is_a_symlink(tmp_path, host):
    layerfs = tmp_path / "layerfs"
    os.symlink(host.path(), layerfs)
    cache = ShadowCache(str(tmp_path / "root"), userxattr=False)
    with pytest.raises(ValueError, match="is a symlink"):
        cache.build("a" * 64, str(layerfs))
    assert cache.lookup("a" * 64) is None


@pytest.mark.parametrize("side", ["upper", "layer"])
def test_directory_attributes_are_never_copied_through_a_swapped_symlink(tmp_path, host, monkeypatch, side):
    layerfs = foreign(tmp_path, ["d/.wh.gone"])
    os.chmod(layerfs / "d", 0o1777)
    original = _ShadowWriter._copy_dir_attributes

    def swapped(writer):
        victim = os.path.join(writer.upper if side == "upper" else writer.layerfs, "d")
        os.rename(victim, victim + "-moved")
        os.symlink(host.path("dir"), victim)  # what a racing writer of a mutable layout could do
        return original(writer)

    monkeypatch.setattr(_ShadowWriter, "_copy_dir_attributes", swapped)
    with pytest.raises(OSError):
        ShadowCache(str(tmp_path / "root"), userxattr=False).build("a" * 64, str(layerfs))
