"""The snapshotter's changes as jobs of the writer thread, each inside its batch's transaction.

Each job checks in containerd's order, changes rows and directories so that a crash at any
step leaves a consistent snapshot or an unowned directory, and says how to take its
directory back if the batch does not commit and what the loop's cache learns once it has
(`writer.Written`). Blocking: they run on the writer thread only.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence

from snapmux.adapters.overlay.cache import MetadataCache
from snapmux.adapters.overlay.layout import Layout
from snapmux.adapters.overlay.mounts import MountOptions, mounts_for
from snapmux.adapters.overlay.reserve import Reservations
from snapmux.adapters.overlay.sqlite_store import Row, Transaction
from snapmux.adapters.overlay.usage import disk_usage
from snapmux.adapters.overlay.writer import Written
from snapmux.domain.model import Info, Kind, Mount, Usage, apply_update


class WriteJobs:
    def __init__(self, layout: Layout, options: MountOptions, cache: MetadataCache,
                 reservations: Reservations | None) -> None:
        self.layout = layout
        self._options = options
        self._cache = cache
        self._reservations = reservations

    def _cached(self, tx: Transaction, snapshot_id: int) -> Callable[[], None]:
        """What the loop applies to the cache once the batch holding this change commits."""
        row = tx.get_by_id(snapshot_id)
        return lambda: self._cache.put(row)

    def _allocate(self) -> int | None:
        return self._reservations.allocate() if self._reservations is not None else None

    def create(
        self, tx: Transaction, kind: Kind, key: str, parent: str, labels: Mapping[str, str] | None
    ) -> Written[list[Mount]]:
        base = tx.parent_for_child(parent)
        tx.get_absent(key)
        chain = tx.chain(base.id) if base else []
        owner = self._owner(base)
        reserved = self._reserved(kind, owner)
        if reserved is not None:
            snapshot_id = self._claim(reserved, lambda: tx.insert(kind, key, base, labels, snapshot_id=reserved))
        else:
            staged = self.layout.build(kind == Kind.ACTIVE, owner)
            snapshot_id = self._install(
                staged, lambda: tx.insert(kind, key, base, labels, snapshot_id=self._allocate()))
        mounts = mounts_for(self.layout, self._options, kind, snapshot_id, chain)
        return Written(mounts, lambda: self.layout.discard_id(snapshot_id), self._cached(tx, snapshot_id),
                       synced=reserved is not None)

    def _owner(self, base: Row | None) -> tuple[int, int] | None:
        """The uid and gid of the parent's fs, which a child's fs takes (None: no parent)."""
        if base is None:
            return None
        st = os.stat(self.layout.fs_path(base.id))
        return st.st_uid, st.st_gid

    def _reserved(self, kind: Kind, owner: tuple[int, int] | None) -> int | None:
        """An active snapshot's directory reserved ahead, if one is ready with its parent's owner."""
        if self._reservations is None or kind != Kind.ACTIVE:
            return None
        return self._reservations.take(owner)

    def _claim(self, reserved: int, insert: Callable[[], int]) -> int:
        try:
            return insert()
        except BaseException:
            self.layout.discard_id(reserved)
            raise

    def _install(self, staged: str, insert: Callable[[], int]) -> int:
        """Row and directory under one id; if either fails the staged directory goes away."""
        try:
            snapshot_id = insert()
            self.layout.install(staged, snapshot_id)
        except BaseException:
            self.layout.discard(staged)
            raise
        return snapshot_id

    def adopt(
        self, tx: Transaction, name: str, parent: str, labels: Mapping[str, str], source: str, shadows: str,
        flattened: bool,
    ) -> Written[Info]:
        base = tx.parent_for_child(parent)
        tx.get_absent(name)
        staged = self.layout.build_link(source, shadows)
        snapshot_id = self._install(staged, lambda: tx.insert(
            Kind.COMMITTED, name, base, labels, source=source, shadows=shadows, flat=flattened,
            snapshot_id=self._allocate()))
        return Written(tx.get(name).info, lambda: self.layout.discard_id(snapshot_id), self._cached(tx, snapshot_id))

    def commit(
        self, tx: Transaction, name: str, key: str, labels: Mapping[str, str] | None, measured: Row, usage: Usage
    ) -> Written[None]:
        row = tx.get(key)
        if row.id != measured.id:  # replaced while we measured: measure again
            usage = disk_usage(self.layout.fs_path(row.id)) if row.info.kind == Kind.ACTIVE else Usage()
        tx.commit_active(row, name, labels, usage)
        return Written(None, committed=self._cached(tx, row.id))

    def remove(self, tx: Transaction, key: str) -> Written[int]:
        row = tx.get(key)
        tx.delete(row)
        return Written(row.id, committed=lambda: self._cache.drop(row.id))

    def update(self, tx: Transaction, info: Info, fieldpaths: Sequence[str]) -> Written[Info]:
        row = tx.get(info.name)
        updated = apply_update(row.info, info, list(fieldpaths))
        tx.replace_info(row, updated)
        return Written(updated, committed=self._cached(tx, row.id))
