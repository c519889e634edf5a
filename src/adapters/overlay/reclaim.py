"""Deleting snapshot directories once no committed metadata owns them.

A directory is first renamed aside (`rm-*`: atomically disowned), then deleted with rmtree
on the read pool, so a big tree never holds up the writer or the loop. Remove leaves its
directory to a background task, as containerd's metadata layer leaves it to GC; Cleanup
sweeps what no snapshot owns. A crash at any point leaves an unowned directory, which the
next Cleanup reclaims.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from snapmux.adapters.overlay.layout import Layout, delete_tree
from snapmux.adapters.overlay.reserve import Reservations
from snapmux.adapters.overlay.sqlite_store import Transaction
from snapmux.adapters.overlay.writer import Written

log = logging.getLogger(__name__)

Read = Callable[..., Awaitable[Any]]
"""Runs `function(*args)` on the snapshotter's read pool."""


class Reclaimer:
    """The directories being deleted, and the background deletions Cleanup and close wait for."""

    def __init__(self, layout: Layout, read: Read, reservations: Reservations | None = None) -> None:
        self._layout = layout
        self._read = read
        self._reservations = reservations
        self._deleting: set[str] = set()
        self._background: set[asyncio.Task[None]] = set()

    def later(self, path: str) -> None:
        """Deletes `path` (its metadata is committed gone) in the background."""
        task = asyncio.create_task(self._discard(path))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _discard(self, path: str) -> None:
        await self.delete([await self._read(self._set_aside, path)])

    async def settle(self) -> None:
        """Waits for background deletions (Cleanup and close promise they are done)."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    def _set_aside(self, path: str) -> str | None:
        """The `rm-*` name is in `_deleting` before it exists, so a Cleanup scanning meanwhile (on
        the writer thread) never takes a directory a Remove is deleting for a leftover. After the
        metadata is committed a failure here is not the caller's: Cleanup reclaims it later."""
        aside = self._layout.aside_path(path)
        self._deleting.add(aside)
        try:
            done = self._layout.set_aside(path, aside)
        except OSError as error:
            log.warning("cannot set %s aside for deletion (Cleanup will retry): %s", path, error)
            done = None
        if done is None:
            self._deleting.discard(aside)
        return done

    async def delete(self, asides: Sequence[str | None]) -> None:
        """rmtree on the read pool, so a big directory never holds up writes."""
        for aside in asides:
            if aside is not None:
                try:
                    await self._read(delete_tree, aside)
                finally:
                    self._deleting.discard(aside)

    def set_aside_unowned(self, tx: Transaction) -> Written[list[str | None]]:
        """A write job that starts its batch (`tx` holds only committed rows): on the writer
        thread, with reservations paused, so no directory is half-built while we look;
        directories held in reserve are not unowned."""
        paused = self._reservations.paused() if self._reservations is not None else contextlib.nullcontext(set())
        with paused as reserved:
            ids = tx.ids()
            self._layout.lowers.prune(ids)
            kept = {str(sid) for sid in ids} | reserved
            layout = self._layout
            paths = [os.path.join(layout.snapshots_dir, name) for name in layout.entries() if name not in kept]
            if not tx.any_adopted():  # no adopted layer left for the hider to cover
                paths.append(layout.lowers.hider)
            return Written([self._set_aside(path) for path in paths if path not in self._deleting])
