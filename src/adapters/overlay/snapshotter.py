"""OverlaySnapshotter: containerd's overlayfs snapshotter, over SQLite metadata, as a SnapshotService.

Writes run on one dedicated thread with group commit (`writer.BatchingWriter`:
SQLite has one writer anyway, and it makes Cleanup's scan race-free against
directories being built), as the jobs of `jobs.py`; with `reserve`, active snapshots'
directories are built ahead of Prepare by a background thread (`reserve.py`). Reads
are answered from `MetadataCache` on the event loop; filesystem work (usage walks,
adopted-source checks, rmtree) goes to a small thread pool, so a hanging CVMFS mount
never holds up the writer.
Directories are deleted only after the metadata change is committed (`reclaim`), so
a crash at any point leaves either a consistent snapshot or an unowned directory
that Cleanup reclaims.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from snapmux.adapters.cpu_turns import kept
from snapmux.adapters.durable import out_of_space
from snapmux.adapters.overlay.cache import MetadataCache
from snapmux.adapters.overlay.layout import Layout
from snapmux.adapters.overlay.lowers import stack, visible
from snapmux.adapters.overlay.jobs import WriteJobs
from snapmux.adapters.overlay.mounts import MountOptions, mounts_for
from snapmux.adapters.overlay.reclaim import Reclaimer
from snapmux.adapters.overlay.reserve import Reservations
from snapmux.adapters.overlay.sqlite_store import Link, Row, SqliteMetadataStore
from snapmux.adapters.overlay.store_checks import RESTORE, UnusableStoreError
from snapmux.adapters.overlay.usage import disk_usage
from snapmux.adapters.overlay.writer import BatchingWriter, Written
from snapmux.domain.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError, UnavailableError
from snapmux.domain.filters import parse_filters
from snapmux.domain.model import Info, Kind, Mount, Usage, validate_key, validate_labels

T = TypeVar("T")

READ_THREADS = 4


def check_sources(chain: Sequence[Link]) -> None:
    """An adopted layer whose source vanished makes only the snapshots above it unavailable
    (below a flattened chain nothing is mounted, so nothing is checked)."""
    for link in visible(chain):
        if link.source and not os.path.isdir(link.source):
            raise UnavailableError(f'snapshot "{link.name}": adopted source {link.source} is not an available directory')
        trees = (os.path.join(link.shadows, "upper"), os.path.join(link.shadows, "lower"))
        if link.shadows and not all(os.path.isdir(tree) for tree in trees):
            raise UnavailableError(f'snapshot "{link.name}": whiteout shadows {link.shadows} are incomplete')


@dataclass(frozen=True)
class _Planned:
    """What Mounts answers for one snapshot, worked out once: its parents never change while it
    exists, so neither do its mounts (about 20 us of path building per call otherwise)."""

    parents: tuple[Link, ...]
    checked: bool
    """Whether each answer first looks at adopted sources and builds the lower stack (`_ready`)."""
    mounts: tuple[Mount, ...]


class OverlaySnapshotter:
    """Implements SnapshotService; construct with `await OverlaySnapshotter.open(root)`."""

    def __init__(self, layout: Layout, store: SqliteMetadataStore, options: MountOptions, reserve: int = 0) -> None:
        """`reserve`: active snapshots' directories kept built ahead of Prepare (`reserve.py`); 0: none."""
        self.layout = layout
        self._store = store
        self._options = options
        self._cache = MetadataCache(store.query().rows())  # blocking: open() runs this in a thread
        self._reservations = Reservations(layout, reserve, store.query().next_id()) if reserve > 0 else None
        self._writer = BatchingWriter(store, layout.sync_dir)
        self._readers = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="snapshots-read")
        self._reclaim = Reclaimer(layout, self._read, self._reservations)
        self._jobs = WriteJobs(layout, options, self._cache, self._reservations)
        self._lock: int | None = None

    @classmethod
    async def open(cls, root: str, layout: Layout | None = None, reserve: int = 0) -> OverlaySnapshotter:
        """Creates the root if needed; never inspects adopted sources, so startup cannot fail on them."""
        layout = layout or Layout(root)

        def setup() -> OverlaySnapshotter:
            layout.create_root()
            lock = layout.lock()
            try:
                store = SqliteMetadataStore(layout.metadata_path, expect_snapshots=layout.has_snapshot_dirs())
                snapshotter = cls(layout, store, MountOptions.detect(), reserve)
            except (sqlite3.DatabaseError, ValueError, KeyError) as error:  # rows that do not decode
                os.close(lock)
                raise UnusableStoreError(f"metadata store {layout.metadata_path} is corrupt ({error}): {RESTORE}") \
                    from None
            except BaseException:
                os.close(lock)
                raise
            snapshotter._lock = lock
            return snapshotter

        return await asyncio.to_thread(setup)

    async def close(self) -> None:
        """Waits for queued work (in-flight calls finish), then closes every connection."""
        await self._reclaim.settle()
        await asyncio.to_thread(self._writer.close)
        if self._reservations is not None:
            await asyncio.to_thread(self._reservations.close)
        await asyncio.to_thread(self._readers.shutdown, True)
        self._store.close()
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    async def _write(self, function: Callable[..., Written[T]], *args: object, starts_batch: bool = False) -> T:
        """Runs `function(tx, *args)` on the writer thread, in a batch's transaction (first in it:
        `starts_batch`). A full disk (a directory not made, a COMMIT refused) leaves nothing behind
        and says so to the caller."""
        self._quiet_from_now()
        try:
            return await self._writer.submit(lambda tx: function(tx, *args), starts_batch)
        except (OSError, sqlite3.Error) as error:
            full = out_of_space(error, self.layout.root)
            if full is None:
                raise
            raise full from None
        finally:
            self._quiet_from_now()

    def _quiet_from_now(self) -> None:
        """Reservations are built once no write was asked for or answered for a while (`QUIET_S`)."""
        if self._reservations is not None:
            self._reservations.last_write = time.monotonic()

    async def _read(self, function: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._readers, functools.partial(function, *args))

    # -- create ---------------------------------------------------------------------------------

    async def _check_parent_sources(self, parent: str) -> None:
        """Before queueing the write: stats of adopted sources never run on the writer thread."""
        if not parent:
            return
        try:
            chain = self._cache.chain(self._cache.get(parent))
        except NotFoundError:
            return  # the write reports it, in containerd's words
        if self._checked(chain):
            await self._built(chain)  # if the chain lost a snapshot meanwhile, the write says NotFound

    async def _built(self, chain: Sequence[Link], *watched: Link) -> bool:
        """Adopted sources are there, and what the mount's lower stack names is built (merged
        shadows, the catalog hider, short links), on the read pool. False when a snapshot of the
        chain (or of `watched`) was removed meanwhile, its trees with it: not ours to report."""
        try:
            await self._read(self._check_and_build, chain)
        except FileNotFoundError:
            if self._chain_intact([*watched, *chain]):
                raise
            return False
        return True

    def _chain_intact(self, chain: Sequence[Link]) -> bool:
        try:
            return all(self._cache.get(link.name).id == link.id for link in chain)
        except NotFoundError:
            return False

    def _checked(self, chain: Sequence[Link]) -> bool:
        return any(link.source for link in chain) or self.layout.lowers.uses_short(stack(chain))

    def _check_and_build(self, chain: Sequence[Link]) -> None:
        check_sources(chain)
        self.layout.lowers.ensure(chain)

    async def prepare(self, key: str, parent: str = "", labels: Mapping[str, str] | None = None) -> list[Mount]:
        validate_key(key)
        validate_labels(labels)
        await self._check_parent_sources(parent)
        return await self._write(self._jobs.create, Kind.ACTIVE, key, parent, labels)

    async def view(self, key: str, parent: str = "", labels: Mapping[str, str] | None = None) -> list[Mount]:
        validate_key(key)
        validate_labels(labels)
        await self._check_parent_sources(parent)
        return await self._write(self._jobs.create, Kind.VIEW, key, parent, labels)

    async def adopt(
        self, name: str, parent: str, labels: Mapping[str, str], source: str, shadows: str = "",
        flattened: bool = False,
    ) -> Info:
        """A committed snapshot whose files are the read-only directory `source`, in O(1).

        `fs` becomes a symlink to `source`, so lowerdir paths stay under `<root>/snapshots/`
        (containerd compacts long lists relative to it); `source` is never walked or deleted.
        `shadows`, when given, holds `upper/` and `lower/` whiteout trees mounted around it.
        `flattened`: `source` already holds every parent's files (a DUCC chain); mounts above it
        stop there.
        """
        validate_key(name, "name")
        validate_labels(labels)
        if not os.path.isabs(source) or "\x00" in source:  # ':' and ',' are fine: mounts name the symlink
            raise InvalidArgumentError(f"adopted source {source!r} must be an absolute path")
        if os.path.commonpath([self.layout.root, os.path.abspath(source)]) == self.layout.root:
            raise InvalidArgumentError(f"adopted source {source} must be outside the snapshotter root")
        if shadows and not os.path.isabs(shadows):
            raise InvalidArgumentError(f"whiteout shadows {shadows!r} must be an absolute path")
        if shadows and flattened:
            raise InvalidArgumentError("a flattened chain has its deletions applied: it takes no whiteout shadows")
        await self._check_parent_sources(parent)
        await self._read(check_sources, [Link(0, name, source, shadows)])
        return await self._write(self._jobs.adopt, name, parent, labels, source, shadows, flattened)

    # -- commit, remove, update -----------------------------------------------------------------

    async def commit(self, name: str, key: str, labels: Mapping[str, str] | None = None) -> None:
        """Usage is measured outside the write lock (it walks the upper dir), then stored with the commit."""
        validate_key(name, "name")
        validate_labels(labels)
        row = self._cache.get(key)
        usage = Usage()
        if row.info.kind == Kind.ACTIVE:
            usage = await self._read(disk_usage, self.layout.fs_path(row.id))
        await self._write(self._jobs.commit, name, key, labels, row, usage)

    async def remove(self, key: str) -> None:
        """The row goes first (committed); the directory is deleted in the background (`reclaim`)."""
        snapshot_id = await self._write(self._jobs.remove, key)
        self._reclaim.later(self.layout.path(snapshot_id))

    async def update(self, info: Info, fieldpaths: Sequence[str] = ()) -> Info:
        return await self._write(self._jobs.update, info, tuple(fieldpaths))

    # -- reads ----------------------------------------------------------------------------------

    async def stat(self, key: str) -> Info:
        return self._cache.get(key).info

    async def usage(self, key: str) -> Usage:
        """Committed: stored at commit. Active: a walk of the upper dir, off the loop."""
        row = self._cache.get(key)
        if row.info.kind == Kind.ACTIVE:
            return await self._read(disk_usage, self.layout.fs_path(row.id))
        return row.usage

    async def mounts(self, key: str) -> list[Mount]:
        """Planned once per snapshot (`_Planned`); adopted sources are still looked at on every call."""
        row = self._cache.get(key)
        if row.info.kind == Kind.COMMITTED:
            raise FailedPreconditionError(f"requested snapshot {key} not active or view: failed precondition")
        plan = self._cache.derived(row, self._plan)
        # stats adopted sources (CVMFS may block), builds the lower stack
        if plan.checked and not await self._built(plan.parents, Link(row.id, key, row.source)):
            return await self.mounts(key)  # removed meanwhile: NotFound, or the key's new snapshot
        return list(plan.mounts)

    def _plan(self, row: Row) -> _Planned:
        parents = self._cache.chain(row)[1:]
        mounts = mounts_for(self.layout, self._options, row.info.kind, row.id, parents)
        return _Planned(tuple(parents), self._checked(parents), tuple(mounts))

    async def walk(self, filters: Sequence[str] = ()) -> AsyncIterator[Info]:
        """Filters are evaluated in short turns: a costly one over many snapshots never holds the loop."""
        match = parse_filters(list(filters))
        async for row in kept(self._cache.rows(), lambda row: match(row.info)):
            yield row.info

    # -- cleanup --------------------------------------------------------------------------------

    async def cleanup(self) -> None:
        """Deletes every directory under `snapshots/` that no snapshot owns (never following symlinks).
        Its scan starts a batch: it sees only committed rows, never a Remove whose COMMIT is to come."""
        await self._reclaim.settle()
        await self._reclaim.delete(await self._write(self._reclaim.set_aside_unowned, starts_batch=True))
