"""Injected failures between the steps of a change: the caller gets the error, the store stays consistent."""

from __future__ import annotations

import contextlib
import os
import sqlite3

import pytest

from snapmux.adapters.overlay.layout import Layout
from snapmux.adapters.overlay.mounts import MountOptions
from snapmux.adapters.overlay.snapshotter import OverlaySnapshotter
from snapmux.adapters.overlay.sqlite_store import SqliteMetadataStore
from snapmux.domain.errors import NotFoundError, ResourceExhaustedError


class FailingLayout(Layout):
    """Fails the named step once, with the OSError a full disk or a permission problem would raise."""

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.fail: set[str] = set()

    def _maybe_fail(self, step: str) -> None:
        if step in self.fail:
            self.fail.discard(step)
            raise OSError(28, f"injected failure in {step}")

    def build(self, with_work, owner=None):  # type: ignore[no-untyped-def]
        self._maybe_fail("build")
        return super().build(with_work, owner)

    def install(self, staged, snapshot_id):  # type: ignore[no-untyped-def]
        self._maybe_fail("install")
        super().install(staged, snapshot_id)

    def set_aside(self, path, aside=None):  # type: ignore[no-untyped-def]
        self._maybe_fail("set_aside")
        return super().set_aside(path, aside)


class FailingCommitStore(SqliteMetadataStore):
    """The next write transaction fails at COMMIT time (after its changes and the directory rename)."""

    fail_next_commit = False

    @contextlib.contextmanager
    def transaction(self, write=False):  # type: ignore[no-untyped-def]
        with super().transaction(write) as tx:
            yield tx
            if write and self.fail_next_commit:
                self.fail_next_commit = False
                raise sqlite3.OperationalError("injected: disk I/O error at COMMIT")


@pytest.fixture
async def parts(tmp_path):
    layout = FailingLayout(str(tmp_path / "root"))
    layout.create_root()
    store = FailingCommitStore(layout.metadata_path)
    snapshotter = OverlaySnapshotter(layout, store, MountOptions.detect())
    yield snapshotter, layout, store
    await snapshotter.close()


def entries(layout: Layout) -> set[str]:
    return set(os.listdir(layout.snapshots_dir))


@pytest.mark.parametrize("step", ["build", "install"])
async def test_a_failed_create_leaves_no_row_and_no_directory(parts, step):
    snapshotter, layout, _ = parts
    await snapshotter.prepare("a")
    before = entries(layout)
    layout.fail.add(step)
    with pytest.raises(ResourceExhaustedError, match="disk full: .*injected failure"):  # the injected errno is ENOSPC
        await snapshotter.prepare("b")
    with pytest.raises(NotFoundError):
        await snapshotter.stat("b")
    assert entries(layout) == before
    await snapshotter.prepare("b")


async def test_a_failed_metadata_commit_removes_the_installed_directory(parts):
    snapshotter, layout, store = parts
    await snapshotter.prepare("a")
    before = entries(layout)
    store.fail_next_commit = True
    with pytest.raises(sqlite3.OperationalError):
        await snapshotter.prepare("b")
    assert entries(layout) == before
    with pytest.raises(NotFoundError):
        await snapshotter.stat("b")
    await snapshotter.prepare("b")
    assert len(entries(layout)) == 2


async def test_a_failed_adopt_commit_leaves_nothing(parts, tmp_path):
    snapshotter, layout, store = parts
    source = tmp_path / "layer"
    source.mkdir()
    store.fail_next_commit = True
    with pytest.raises(sqlite3.OperationalError):
        await snapshotter.adopt("l", "", {}, str(source))
    assert entries(layout) == set() and source.is_dir()


async def test_remove_whose_directory_cannot_be_set_aside_succeeds_and_cleanup_reclaims(parts):
    snapshotter, layout, _ = parts
    await snapshotter.prepare("a")
    layout.fail.add("set_aside")
    await snapshotter.remove("a")
    with pytest.raises(NotFoundError):
        await snapshotter.stat("a")
    assert len(entries(layout)) == 1
    await snapshotter.cleanup()
    assert entries(layout) == set()


async def test_an_orphan_at_a_reused_id_is_replaced(parts):
    """SQLite hands a rolled-back id out again; a directory a crash left at that id is stale, not data."""
    snapshotter, layout, store = parts
    store.fail_next_commit = True
    with pytest.raises(sqlite3.OperationalError):
        await snapshotter.prepare("a")
    os.makedirs(os.path.join(layout.path(1), "fs", "stale"))  # as if the crash came before the undo
    await snapshotter.prepare("b")
    assert entries(layout) == {"1"}
    assert os.listdir(layout.fs_path(1)) == []


async def test_remove_deletes_its_directory_in_the_background_and_close_waits(tmp_path):
    snapshotter = await OverlaySnapshotter.open(str(tmp_path / "root"))
    [mount] = await snapshotter.prepare("a")
    for n in range(200):
        (tmp_path / "root" / "snapshots").joinpath(os.path.relpath(mount.source, snapshotter.layout.snapshots_dir), f"f{n}").write_text("x")
    await snapshotter.remove("a")
    with pytest.raises(NotFoundError):
        await snapshotter.stat("a")
    await snapshotter.close()
    assert entries(snapshotter.layout) == set()


async def test_one_process_per_root(tmp_path):
    first = await OverlaySnapshotter.open(str(tmp_path / "root"))
    with pytest.raises(OSError, match="another cvmfs-snapshotter uses root"):
        await OverlaySnapshotter.open(str(tmp_path / "root"))
    await first.close()
    again = await OverlaySnapshotter.open(str(tmp_path / "root"))
    await again.close()
