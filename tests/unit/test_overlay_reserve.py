"""Directories reserved ahead of Prepare: taken with one sync, never lost, never mistaken for data."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest

from snapmux.adapters.overlay.layout import RESERVED_MARK, Layout, is_reserved
from snapmux.adapters.overlay.mounts import MountOptions
from snapmux.adapters.overlay.snapshotter import OverlaySnapshotter
from snapmux.adapters.overlay.sqlite_store import SqliteMetadataStore
from snapmux.domain.model import Kind

DEADLINE_S = 30.0


class SyncSpyLayout(Layout):
    """Records which thread syncs `snapshots/`; `fail_reserving` makes every reservation fail (ENOSPC)."""

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.synced_by: list[str] = []
        self.fail_reserving = False

    def sync_dir(self) -> None:
        self.synced_by.append(threading.current_thread().name)
        super().sync_dir()

    def mark_reserved(self, staged: str) -> None:
        if self.fail_reserving:
            raise OSError(28, "injected: no space left on device")
        super().mark_reserved(staged)


async def opened(tmp_path, reserve: int = 2) -> tuple[OverlaySnapshotter, SyncSpyLayout]:
    layout = SyncSpyLayout(str(tmp_path / "root"))
    layout.create_root()
    store = await asyncio.to_thread(SqliteMetadataStore, layout.metadata_path)
    return await asyncio.to_thread(OverlaySnapshotter, layout, store, MountOptions.detect(), reserve), layout


async def reserved(snapshotter: OverlaySnapshotter, count: int) -> None:
    """Polls with a deadline until `count` directories are ready (the builder waits for quiet)."""
    deadline = time.monotonic() + DEADLINE_S
    while snapshotter._reservations.ready() < count:
        assert time.monotonic() < deadline, f"{count} reservations not ready within {DEADLINE_S}s"
        await asyncio.sleep(0.01)


def marked(layout: Layout) -> set[str]:
    return {name for name in layout.entries() if is_reserved(layout.snapshots_dir, name)}


async def test_a_prepare_that_takes_a_reservation_commits_without_a_directory_fsync(tmp_path):
    snapshotter, layout = await opened(tmp_path)
    try:
        await reserved(snapshotter, 2)
        ahead = marked(layout)
        layout.synced_by.clear()
        mounts = await snapshotter.prepare("a")
        row = snapshotter._cache.get("a")
        assert str(row.id) in ahead and row.info.kind == Kind.ACTIVE
        assert "snapshots-write" not in layout.synced_by  # the only sync on the way was SQLite's COMMIT
        assert sorted(os.listdir(layout.path(row.id))) == ["fs", "work"]  # the marker is gone
        assert mounts[0].source == layout.fs_path(row.id)
        assert oct(os.stat(layout.fs_path(row.id)).st_mode & 0o777) == "0o755"
    finally:
        await snapshotter.close()


async def test_without_reservations_every_prepare_syncs_its_directory(tmp_path):
    """The control for the test above: the spy does see the writer's directory fsync."""
    snapshotter, layout = await opened(tmp_path, reserve=0)
    try:
        await snapshotter.prepare("a")
        assert layout.synced_by == ["snapshots-write"]
    finally:
        await snapshotter.close()


async def test_ids_given_beside_reservations_never_collide(tmp_path):
    """Views, adopts and a burst of Prepares beyond the reserve get ids above every reserved one."""
    snapshotter, layout = await opened(tmp_path)
    source = tmp_path / "layer"
    source.mkdir()
    try:
        await snapshotter.prepare("base-a")
        await snapshotter.commit("base", "base-a")
        await reserved(snapshotter, 2)
        await snapshotter.adopt("adopted", "", {}, str(source))
        await asyncio.gather(*(snapshotter.prepare(f"a{n}", "base") for n in range(6)),
                             *(snapshotter.view(f"v{n}", "base") for n in range(3)))
        rows = list(snapshotter._cache.rows())
        assert len({row.id for row in rows}) == len(rows) == 11
        for row in rows:
            assert os.path.isdir(layout.fs_path(row.id)) or os.path.islink(layout.fs_path(row.id))
            assert os.path.isdir(layout.work_path(row.id)) == (row.info.kind != Kind.VIEW and not row.source)
            assert not os.path.lexists(os.path.join(layout.path(row.id), RESERVED_MARK))
    finally:
        await snapshotter.close()


async def test_cleanup_keeps_reservations_and_close_deletes_them(tmp_path):
    snapshotter, layout = await opened(tmp_path)
    try:
        await snapshotter.prepare("a")
        await reserved(snapshotter, 2)
        ahead = marked(layout)
        await snapshotter.cleanup()
        assert set(layout.entries()) == ahead | {str(snapshotter._cache.get("a").id)}
    finally:
        await snapshotter.close()
    assert set(layout.entries()) == {str(snapshotter._cache.get("a").id)}


async def test_a_reservation_left_by_a_crash_is_not_taken_for_a_lost_store_and_cleanup_reclaims_it(tmp_path):
    layout = Layout(str(tmp_path / "root"))
    layout.create_root()
    staged = layout.build(True)
    layout.mark_reserved(staged)
    layout.install(staged, 7)  # as the builder leaves it; the store never heard of id 7
    assert not layout.has_snapshot_dirs()
    snapshotter = await OverlaySnapshotter.open(str(tmp_path / "root"), reserve=2)  # no UnusableStoreError
    try:
        await snapshotter.cleanup()
        assert "7" not in layout.entries()
        await snapshotter.prepare("a")
    finally:
        await snapshotter.close()


async def test_a_parent_owned_by_another_user_gets_a_directory_of_its_own(tmp_path):
    """A reserved fs is the daemon's; the child of a parent owned by someone else is built and
    chowned as without reservations (and synced), and the reservations stay for others."""
    snapshotter, layout = await opened(tmp_path)
    try:
        await snapshotter.prepare("base-a")
        await snapshotter.commit("base", "base-a")
        os.lchown(layout.fs_path(snapshotter._cache.get("base").id), 4321, 4321)
        await reserved(snapshotter, 2)
        ahead = marked(layout)
        await snapshotter.prepare("child", "base")
        child = snapshotter._cache.get("child").id
        assert str(child) not in ahead and marked(layout) == ahead
        st = os.stat(layout.fs_path(child))
        assert (st.st_uid, st.st_gid) == (4321, 4321)
    finally:
        await snapshotter.close()


async def test_reservations_that_cannot_be_built_leave_prepare_working_and_nothing_behind(tmp_path):
    snapshotter, layout = await opened(tmp_path)
    layout.fail_reserving = True
    try:
        for n in range(3):
            await snapshotter.prepare(f"a{n}")
            await asyncio.sleep(0.02)  # quiet moments: the builder tries (and fails) meanwhile
        assert snapshotter._reservations.ready() == 0
        owned = {str(row.id) for row in snapshotter._cache.rows()}
        await snapshotter.cleanup()
        assert set(layout.entries()) == owned and not marked(layout)
    finally:
        await snapshotter.close()


@pytest.mark.parametrize("reserve", [1, 4])
async def test_a_prepare_waits_for_nothing_when_the_reserve_is_empty(tmp_path, reserve):
    """Prepares back to back (no quiet moment to build in) still succeed, each with its own directory."""
    snapshotter, layout = await opened(tmp_path, reserve)
    try:
        for n in range(10):
            await snapshotter.prepare(f"a{n}")
        assert len({row.id for row in snapshotter._cache.rows()}) == 10
    finally:
        await snapshotter.close()


async def test_a_reservation_gone_from_under_it_is_skipped_and_reclaimed(tmp_path):
    snapshotter, layout = await opened(tmp_path, reserve=1)
    try:
        await reserved(snapshotter, 1)
        [lost] = marked(layout)
        os.unlink(os.path.join(layout.snapshots_dir, lost, RESERVED_MARK))  # as if someone meddled
        await snapshotter.prepare("a")
        assert str(snapshotter._cache.get("a").id) != lost
        await snapshotter.cleanup()
        assert lost not in layout.entries()
    finally:
        await snapshotter.close()
