"""Cleanup beside concurrent Removes: it disowns only what no committed row owns, and leaves
what a Remove is deleting to that Remove.

The writer groups queued writes into one transaction. A Cleanup queued right behind a Remove
must not see that Remove's uncommitted delete: the directory would go while the committed
store (and the event loop's cache, which learns of the Remove only once its batch commits)
still lists the snapshot. The batching tests hold the writer thread so that both are queued
before it takes its next batch, the order test_overlay_crash's concurrent workloads hit about
once in 36 runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
from collections.abc import AsyncIterator

import pytest

from snapmux.adapters.overlay.layout import Layout
from snapmux.adapters.overlay.mounts import MountOptions
from snapmux.adapters.overlay.snapshotter import OverlaySnapshotter
from snapmux.adapters.overlay.writer import Written
from snapmux.domain.errors import NotFoundError
from tests.support.polling import until
from tests.unit.test_overlay_adopt import adopt_shadowed_layers
from tests.unit.test_overlay_failures import FailingCommitStore

DEADLINE_S = 10.0


class ScanningLayout(Layout):
    """Calls `after_rename()` once, right after the next directory is renamed aside."""

    after_rename = None

    def set_aside(self, path, aside=None):  # type: ignore[no-untyped-def]
        done = super().set_aside(path, aside)
        hook, self.after_rename = self.after_rename, None
        if hook is not None:
            hook()
        return done


@pytest.fixture
async def snapshotter(tmp_path):
    layout = ScanningLayout(str(tmp_path / "root"))
    layout.create_root()
    snapshotter = OverlaySnapshotter(layout, FailingCommitStore(layout.metadata_path), MountOptions.detect())
    yield snapshotter
    await snapshotter.close()


@contextlib.asynccontextmanager
async def writer_held(snapshotter: OverlaySnapshotter) -> AsyncIterator[None]:
    """The writer thread waits inside a job of its own until the block ends, so the writes
    started meanwhile are all queued when it takes its next batch."""
    started, release = threading.Event(), threading.Event()

    def hold(tx):  # type: ignore[no-untyped-def]
        started.set()
        release.wait(DEADLINE_S)
        return Written(None)

    holding = asyncio.ensure_future(snapshotter._writer.submit(hold))
    await asyncio.to_thread(started.wait, DEADLINE_S)
    try:
        yield
    finally:
        release.set()
        await holding


def queued(snapshotter: OverlaySnapshotter) -> int:
    return snapshotter._writer._queue.qsize()


async def test_a_view_over_a_parent_removed_just_before_a_cleanup_is_not_found(snapshotter, tmp_path):
    """The trace of the flaky failure: Remove of layer1, then Cleanup, queued together; a View over
    layer1 builds layer1's merged shadows (in snapshots/<id>/) while Cleanup has just scanned."""
    await adopt_shadowed_layers(snapshotter, tmp_path, 2)
    scanned, go_on = threading.Event(), threading.Event()
    scan = snapshotter._reclaim.set_aside_unowned

    def scan_then_wait(tx):  # type: ignore[no-untyped-def]
        written = scan(tx)
        scanned.set()
        go_on.wait(DEADLINE_S)
        return written

    snapshotter._reclaim.set_aside_unowned = scan_then_wait
    async with writer_held(snapshotter):
        removing = asyncio.ensure_future(snapshotter.remove("layer1"))
        cleaning = asyncio.ensure_future(snapshotter.cleanup())
        await until(lambda: queued(snapshotter) == 2, "Remove and Cleanup queued")
    await asyncio.to_thread(scanned.wait, DEADLINE_S)
    viewing = asyncio.ensure_future(snapshotter.view("v", "layer1"))
    await until(lambda: viewing.done() or queued(snapshotter) == 1, "the View answered or queued")
    go_on.set()
    await asyncio.gather(removing, cleaning)
    with pytest.raises(NotFoundError, match='missing parent "layer1"'):
        await viewing
    assert [info.name async for info in snapshotter.walk()] == ["layer0"]


async def test_a_remove_whose_batch_fails_keeps_its_directory_from_a_cleanup_queued_behind_it(snapshotter):
    """A Remove whose COMMIT fails leaves the snapshot as it was, directory included, though a
    Cleanup was queued right behind it."""
    await snapshotter.prepare("a")
    path = snapshotter.layout.path(snapshotter._cache.get("a").id)
    remove = snapshotter._jobs.remove

    def remove_then_fail_the_commit(tx, key):  # type: ignore[no-untyped-def]
        snapshotter._store.fail_next_commit = True  # the COMMIT of the batch this Remove is in
        return remove(tx, key)

    snapshotter._jobs.remove = remove_then_fail_the_commit
    async with writer_held(snapshotter):
        removing = asyncio.ensure_future(snapshotter.remove("a"))
        cleaning = asyncio.ensure_future(snapshotter.cleanup())
        await until(lambda: queued(snapshotter) == 2, "Remove and Cleanup queued")
    removed, cleaned = await asyncio.gather(removing, cleaning, return_exceptions=True)
    assert isinstance(removed, sqlite3.OperationalError) and "injected" in str(removed)
    assert (await snapshotter.stat("a")).name == "a"
    assert os.path.isdir(os.path.join(path, "fs")) and os.path.isdir(os.path.join(path, "work"))
    assert cleaned is None  # in a batch of its own, which commits
    await snapshotter.commit("c", "a")


async def test_a_cleanup_scanning_as_a_remove_sets_its_directory_aside_leaves_it_to_the_remove(snapshotter):
    """The Remove's background deletion renames the directory to `rm-*` on the read pool; a Cleanup
    scanning right then must not take it for a leftover and delete it as well (two rmtrees of one
    tree, each logging "failed to delete" what the other deleted first)."""
    await snapshotter.prepare("a")
    found: list[str | None] = []

    def scan() -> None:  # on the read pool, as the Remove's deletion's rename returns
        with snapshotter._store.transaction() as tx:
            found.extend(snapshotter._reclaim.set_aside_unowned(tx).value)

    snapshotter.layout.after_rename = scan
    await snapshotter.remove("a")
    await snapshotter._reclaim.settle()
    assert snapshotter.layout.after_rename is None  # the scan ran
    assert [aside for aside in found if aside is not None] == []
    assert os.listdir(snapshotter.layout.snapshots_dir) == []
