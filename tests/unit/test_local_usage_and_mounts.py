"""Usage counting (as continuity's fs.DiskUsage) and mount building (as containerd's overlay snapshotter)."""

from __future__ import annotations

import os

from snapmux.adapters.local.layout import Layout
from snapmux.adapters.local.mounts import MountOptions, mounts_for
from snapmux.adapters.local.snapshotter import OverlaySnapshotter
from snapmux.adapters.local.usage import disk_usage
from snapmux.domain.model import Kind, Mount


def test_usage_counts_each_inode_once_by_allocated_blocks(tmp_path):
    root = tmp_path / "fs"
    (root / "d").mkdir(parents=True)
    (root / "d" / "data").write_bytes(os.urandom(64 * 1024))
    os.link(root / "d" / "data", root / "hardlink")
    os.symlink("/nonexistent/target", root / "dangling")
    with open(root / "sparse", "wb") as handle:
        handle.truncate(1 << 30)
    usage = disk_usage(str(root))
    expected = {os.lstat(p).st_ino: os.lstat(p).st_blocks * 512 for p in
                (root, root / "d", root / "d" / "data", root / "dangling", root / "sparse")}
    assert usage.inodes == 5 == len(expected)
    assert usage.size == sum(expected.values()) < (1 << 30)


async def test_usage_of_active_is_measured_and_committed_is_stored(tmp_path):
    snapshotter = await OverlaySnapshotter.open(str(tmp_path / "root"))
    try:
        [mount] = await snapshotter.prepare("a")
        with open(os.path.join(mount.source, "f"), "wb") as handle:
            handle.write(os.urandom(100_000))
        active = await snapshotter.usage("a")
        assert active.inodes == 2 and active.size >= 100_000
        await snapshotter.commit("c", "a")
        os.unlink(os.path.join(mount.source, "f"))  # committed usage is what was measured at commit
        assert await snapshotter.usage("c") == active
    finally:
        await snapshotter.close()


def test_mounts_follow_containerd(tmp_path):
    layout = Layout(str(tmp_path))
    plain, userns = MountOptions(index_off=True, userxattr=False), MountOptions(index_off=False, userxattr=True)
    fs = layout.fs_path
    assert mounts_for(layout, plain, Kind.ACTIVE, 1, []) == [Mount("bind", fs(1), options=("rw", "rbind"))]
    assert mounts_for(layout, plain, Kind.VIEW, 1, []) == [Mount("bind", fs(1), options=("ro", "rbind"))]
    assert mounts_for(layout, plain, Kind.VIEW, 3, [2]) == [Mount("bind", fs(2), options=("ro", "rbind"))]
    assert mounts_for(layout, plain, Kind.ACTIVE, 4, [3, 2, 1]) == [Mount("overlay", "overlay", options=(
        "index=off", f"workdir={layout.work_path(4)}", f"upperdir={fs(4)}", f"lowerdir={fs(3)}:{fs(2)}:{fs(1)}"))]
    assert mounts_for(layout, userns, Kind.VIEW, 4, [3, 2]) == [
        Mount("overlay", "overlay", options=("userxattr", f"lowerdir={fs(3)}:{fs(2)}"))]


def test_parents_adopted_with_whiteout_shadows_mount_as_three_lowers(tmp_path):
    layout = Layout(str(tmp_path))
    plain = MountOptions(index_off=False, userxattr=False)
    fs, up, low = layout.fs_path, layout.wh_upper_path, layout.wh_lower_path
    assert up(2) == f"{layout.snapshots_dir}/2/wh-upper" and low(2) == f"{layout.snapshots_dir}/2/wh-lower"
    assert mounts_for(layout, plain, Kind.ACTIVE, 4, [3, 2, 1], shadowed={2}) == [Mount("overlay", "overlay", options=(
        f"workdir={layout.work_path(4)}", f"upperdir={fs(4)}", f"lowerdir={fs(3)}:{up(2)}:{fs(2)}:{low(2)}:{fs(1)}"))]
    # a view of one shadowed parent is no bind: the shadows must apply
    assert mounts_for(layout, plain, Kind.VIEW, 3, [2], shadowed={2}) == [
        Mount("overlay", "overlay", options=(f"lowerdir={up(2)}:{fs(2)}:{low(2)}",))]


def test_mount_options_detect_this_host():
    detected = MountOptions.detect()
    assert detected.index_off == os.path.exists("/sys/module/overlay/parameters/index")
    with open("/proc/self/uid_map") as handle:
        assert detected.userxattr == (handle.read().split()[:3] != ["0", "0", "4294967295"])
