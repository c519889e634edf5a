"""Usage counting (as continuity's fs.DiskUsage) and mount building (as containerd's overlay snapshotter)."""

from __future__ import annotations

import os

from snapmux.adapters.overlay.layout import Layout
from snapmux.adapters.overlay.sqlite_store import Link
from snapmux.adapters.overlay.mounts import MountOptions, mounts_for
from snapmux.adapters.overlay.snapshotter import OverlaySnapshotter
from snapmux.adapters.overlay.usage import disk_usage
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


def plain(*ids):
    return [Link(i, f"s{i}", "") for i in ids]


def adopted(i, shadows="", flat=False):
    return Link(i, f"s{i}", f"/layers/{i}", shadows, flat)


def test_mounts_follow_containerd(tmp_path):
    layout = Layout(str(tmp_path))
    opts, userns = MountOptions(index_off=True, userxattr=False), MountOptions(index_off=False, userxattr=True)
    fs = layout.fs_path
    assert mounts_for(layout, opts, Kind.ACTIVE, 1, []) == [Mount("bind", fs(1), options=("rw", "rbind"))]
    assert mounts_for(layout, opts, Kind.VIEW, 1, []) == [Mount("bind", fs(1), options=("ro", "rbind"))]
    assert mounts_for(layout, opts, Kind.VIEW, 3, plain(2)) == [Mount("bind", fs(2), options=("ro", "rbind"))]
    assert mounts_for(layout, opts, Kind.ACTIVE, 4, plain(3, 2, 1)) == [Mount("overlay", "overlay", options=(
        "index=off", f"workdir={layout.work_path(4)}", f"upperdir={fs(4)}", f"lowerdir={fs(3)}:{fs(2)}:{fs(1)}"))]
    assert mounts_for(layout, userns, Kind.VIEW, 4, plain(3, 2)) == [
        Mount("overlay", "overlay", options=("userxattr", f"lowerdir={fs(3)}:{fs(2)}"))]


def lowerdirs(mounts):
    (mount,) = mounts
    return next(o for o in mount.options if o.startswith("lowerdir="))[len("lowerdir="):].split(":")


def test_adopted_parents_mount_with_their_shadows_merged_where_adjacent_and_the_catalog_hidden(tmp_path):
    layout = Layout(str(tmp_path))
    opts = MountOptions(index_off=False, userxattr=False)
    fs, up, low = layout.fs_path, layout.wh_upper_path, layout.wh_lower_path
    merged, hider = (lambda i: f"{layout.snapshots_dir}/{i}/wh-merged"), f"{layout.snapshots_dir}/hide"
    assert up(2) == f"{layout.snapshots_dir}/2/wh-upper" and low(2) == f"{layout.snapshots_dir}/2/wh-lower"
    chain = [Link(3, "s3", ""), adopted(2, "/wh/2"), adopted(1)]
    assert lowerdirs(mounts_for(layout, opts, Kind.ACTIVE, 4, chain)) == [hider, fs(3), up(2), fs(2), low(2), fs(1)]
    # a view of one shadowed (or any adopted) parent is no bind: the shadows and the hider must apply
    assert lowerdirs(mounts_for(layout, opts, Kind.VIEW, 3, [adopted(2, "/wh/2")])) == [hider, up(2), fs(2), low(2)]
    assert lowerdirs(mounts_for(layout, opts, Kind.VIEW, 3, [adopted(2)])) == [hider, fs(2)]
    # three scanned layers in a row: 2n+1 lowers, each child's wh-lower merged with its parent's wh-upper
    chain = [adopted(3, "/wh/3"), adopted(2, "/wh/2"), adopted(1, "/wh/1")]
    assert lowerdirs(mounts_for(layout, opts, Kind.ACTIVE, 4, chain)) == [
        hider, up(3), fs(3), merged(3), fs(2), merged(2), fs(1), low(1)]


def test_nothing_below_a_flattened_chain_is_mounted(tmp_path):
    layout = Layout(str(tmp_path))
    opts = MountOptions(index_off=False, userxattr=False)
    chain = [adopted(3, "/wh/3"), adopted(2, flat=True), adopted(1, "/wh/1"), Link(0, "s0", "")]
    assert lowerdirs(mounts_for(layout, opts, Kind.ACTIVE, 4, chain)) == [
        f"{layout.snapshots_dir}/hide", layout.wh_upper_path(3), layout.fs_path(3), layout.wh_lower_path(3), layout.fs_path(2)]


def test_a_deep_stack_names_short_links_that_fit_a_page_after_containerds_compaction(tmp_path):
    layout = Layout(str(tmp_path / ("long-root-" * 8)))
    opts = MountOptions(index_off=True, userxattr=False)
    chain = [adopted(i, f"/wh/{i}") for i in range(1000, 800, -1)]  # 200 scanned layers
    lowers = lowerdirs(mounts_for(layout, opts, Kind.ACTIVE, 5000, chain))
    assert len(lowers) == 402 <= 500  # hider, top wh-upper, fs + wh-merged each: within overlayfs's 500
    assert {os.path.dirname(lower) for lower in lowers} == {f"{layout.root}/l"}
    relative = ":".join(os.path.basename(lower) for lower in lowers)  # what containerd's compaction passes
    assert len(relative) + 2 * len(layout.work_path(5000)) + 64 < 4096
    assert len(set(lowers)) == len(lowers)


def test_mount_options_detect_this_host():
    detected = MountOptions.detect()
    assert detected.index_off == os.path.exists("/sys/module/overlay/parameters/index")
    with open("/proc/self/uid_map") as handle:
        assert detected.userxattr == (handle.read().split()[:3] != ["0", "0", "4294967295"])


async def test_short_links_are_made_for_a_deep_stack_and_cleanup_drops_them_with_their_snapshots(tmp_path):
    snapshotter = await OverlaySnapshotter.open(str(tmp_path / "root"))
    try:
        parent = ""
        for index in range(80):
            await snapshotter.prepare(f"a{index}", parent)
            await snapshotter.commit(f"c{index}", f"a{index}")
            parent = f"c{index}"
        lowers = lowerdirs(await snapshotter.prepare("container", parent))
        short_dir = snapshotter.layout.lowers.short_dir
        assert len(lowers) == 80 and all(os.path.dirname(lower) == short_dir for lower in lowers)
        assert [os.path.realpath(lower) for lower in lowers] == [
            os.path.realpath(snapshotter.layout.fs_path(sid)) for sid in range(80, 0, -1)]
        await snapshotter.remove("container")
        for index in range(79, 39, -1):
            await snapshotter.remove(f"c{index}")
        await snapshotter.cleanup()
        assert sorted(os.listdir(short_dir)) == sorted(os.path.basename(lower) for lower in lowers[40:])
    finally:
        await snapshotter.close()


async def test_mounts_are_planned_once_per_snapshot_and_follow_its_changes(tmp_path, monkeypatch):
    """Mounts builds a snapshot's paths once (they cannot change while it exists); a key that
    is committed, or removed and prepared again on another parent, is answered afresh."""
    from snapmux.adapters.overlay import snapshotter as module

    built: list[int] = []
    monkeypatch.setattr(module, "mounts_for", lambda *args: built.append(args[3]) or mounts_for(*args))
    snapshotter = await OverlaySnapshotter.open(str(tmp_path / "root"))
    try:
        for name in ("one", "two"):
            await snapshotter.prepare(f"{name}-a")
            await snapshotter.commit(name, f"{name}-a")
        await snapshotter.prepare("k", "one")
        built.clear()
        first = await snapshotter.mounts("k")
        assert await snapshotter.mounts("k") == first and len(built) == 1
        (await snapshotter.mounts("k")).clear()  # a caller's list is its own
        assert await snapshotter.mounts("k") == first
        await snapshotter.remove("k")
        await snapshotter.prepare("k", "two")
        again = await snapshotter.mounts("k")
        assert lowerdirs(again) == [snapshotter.layout.fs_path(2)] and lowerdirs(first) == [snapshotter.layout.fs_path(1)]
        await snapshotter.commit("k-done", "k")
        await snapshotter.prepare("k", "k-done")
        assert lowerdirs(await snapshotter.mounts("k")) == [snapshotter.layout.fs_path(4), snapshotter.layout.fs_path(2)]
    finally:
        await snapshotter.close()
