"""Directories for active snapshots made ahead of Prepare, already durable at the ids they will have.

Prepare's own cost is mostly two syncs: the fsync of `snapshots/` that makes a renamed
directory durable before the row that owns it, and SQLite's COMMIT. A background thread
builds an active snapshot's directory (`fs`, `work`), renames it to an id no row has yet
and syncs that rename; a Prepare that takes one inserts its row under that id and commits:
one sync, and the row still never points at a directory a crash can lose.

Until it is taken a reserved directory holds a `reserved` marker (`Layout.mark_reserved`),
so a root whose store was lost is not judged by it; a crash leaves it unowned, and Cleanup
reclaims it like any other orphan. While reservations are on, every id is handed out here
(`allocate`), above every reserved one, so an id never names two things.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator

from snapmux.adapters.overlay.layout import Layout

log = logging.getLogger(__name__)

RESERVED = 4
"""How many the daemon keeps ready: a burst of Prepares beyond it builds its own, as without."""

QUIET_S = 0.002
"""Building waits until no write was asked for or answered for this long: its syncs would
otherwise delay the next write (a Commit right after its Prepare) by what they save the Prepare.
Back-to-back writes thus build as without reservations; a Prepare reaching a quiet daemon (as
`ctr run` does) takes one."""

LOOK_S = 0.05
"""The longest wait between looks for a quiet moment under steady writes."""


class Reservations:
    """Reserved ids and their directories; `take` and `allocate` run on the writer thread."""

    def __init__(self, layout: Layout, size: int, next_id: int) -> None:
        self._layout = layout
        self._size = size
        self._next = next_id
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._ready: collections.deque[tuple[int, int, int]] = collections.deque()  # id, uid, gid of its fs
        self._building = threading.Lock()
        """Held while one is built: Cleanup's scan holds it too (`paused`), so it never sees a half-built one."""
        self._stopped = False
        self._failed = False
        self.last_write = 0.0
        """time.monotonic() of the last write asked for or answered; set by the loop, read here (a float: atomic)."""
        self._thread = threading.Thread(target=self._serve, name="snapshots-reserve", daemon=True)
        self._thread.start()

    def ready(self) -> int:
        """How many are ready to be taken (a method, not __len__: an empty reserve is still one)."""
        return len(self._ready)

    def allocate(self) -> int:
        """An id for a snapshot that takes no reservation: above every reserved one."""
        with self._lock:
            self._next += 1
            return self._next - 1

    def take(self, owner: tuple[int, int] | None) -> int | None:
        """A reserved id whose `fs` is owned by `owner` (uid, gid; None: any), or None. Its
        marker is removed; the caller inserts the row under it, or discards the directory."""
        with self._lock:
            if self._failed or len(self._ready) >= self._size:  # the builder sleeps until told
                self._wake.notify()  # (it then waits for a quiet moment)
            self._failed = False  # a failed build is tried again once more are wanted
            if not self._ready or (owner is not None and self._ready[0][1:] != owner):
                return None  # a parent owned by another user: its upper dir must be chowned and synced
            snapshot_id = self._ready.popleft()[0]
        try:
            self._layout.unmark_reserved(snapshot_id)  # not synced: a lost unlink only hides it from has_snapshot_dirs
        except OSError as error:  # not ours to use any more: the caller builds its own
            log.warning("reserved snapshot directory %s is unusable (Cleanup reclaims it): %s", snapshot_id, error)
            return None
        return snapshot_id

    @contextlib.contextmanager
    def paused(self) -> Iterator[set[str]]:
        """No directory is being built meanwhile; yields the entries of `snapshots/` held in reserve."""
        with self._building:
            with self._lock:
                held = {str(snapshot_id) for snapshot_id, _, _ in self._ready}
            yield held

    def close(self) -> None:
        """Stops building, then deletes what is still reserved (blocking)."""
        with self._lock:
            self._stopped = True
            self._wake.notify()
        self._thread.join()
        while self._ready:
            self._layout.discard_id(self._ready.popleft()[0])

    def _serve(self) -> None:
        while self._await_quiet():
            with self._building:
                self._reserve_one()

    def _await_quiet(self) -> bool:
        """Until one is wanted and writes have paused; False once stopped. Under steady writes it
        looks again after ever longer waits (up to LOOK_S), so it costs the loop next to nothing."""
        wait = QUIET_S
        with self._lock:
            while not self._stopped:
                if self._failed or len(self._ready) >= self._size:
                    self._wake.wait()
                    wait = QUIET_S
                elif time.monotonic() - self.last_write < QUIET_S:
                    self._wake.wait(wait)
                    wait = min(wait * 2, LOOK_S)
                else:
                    return True
        return False

    def _reserve_one(self) -> None:
        snapshot_id = self.allocate()
        staged = None
        try:
            staged = self._layout.build(True)
            self._layout.mark_reserved(staged)
            self._layout.install(staged, snapshot_id)
            self._layout.sync_dir()
            st = os.lstat(self._layout.fs_path(snapshot_id))
        except OSError as error:  # a full disk: Prepare builds its own (and says why), we try again later
            log.debug("cannot reserve a snapshot directory: %s", error)
            with contextlib.suppress(OSError):
                if staged:
                    self._layout.discard(staged)
                self._layout.discard_id(snapshot_id)
            with self._lock:
                self._failed = True
            return
        with self._lock:
            self._ready.append((snapshot_id, st.st_uid, st.st_gid))
