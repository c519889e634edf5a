"""The on-disk layout of a snapshotter root, and the crash-safe steps that change it.

    <root>/metadata.db            SQLite metadata (the single source of truth)
    <root>/snapshots/<id>/fs      a snapshot's files (or, when adopted, a symlink to its source)
    <root>/snapshots/<id>/work    overlayfs workdir (active snapshots only)
    <root>/snapshots/<id>/wh-upper, wh-lower
                                  adopted with whiteout shadows: symlinks to `<shadows>/upper`
                                  and `<shadows>/lower`, mounted around `fs`
    <root>/snapshots/<id>/wh-merged
                                  its `wh-lower` merged with its parent's `wh-upper` (`lowers.py`)
    <root>/snapshots/hide         one whiteout hiding CVMFS's `.cvmfscatalog` over adopted layers
    <root>/l/<short>              short symlinks to the above, for long lowerdir lists
    <root>/snapshots/<id>/reserved
                                  marks a directory built ahead of the Prepare that will own it
                                  (`reserve.py`): no row has its id yet
    <root>/snapshots/new-*        directories being built (never referenced by a row)
    <root>/snapshots/rm-*         directories being deleted (never referenced by a row)

Every directory is built aside and renamed into place, and every deletion
renames the directory aside before deleting it, so at any instant each entry of
`snapshots/` is either owned by a metadata row or reclaimable by Cleanup.
Deletion never follows symlinks, so an adopted snapshot's source is never touched.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import tempfile
import uuid

from snapmux.adapters.durable import fsync_dir
from snapmux.adapters.file_modes import create_private_file, make_dirs
from snapmux.adapters.overlay.store_checks import UnusableStoreError, check_root
from snapmux.adapters.overlay.lowers import HIDER_DIR, LowerPaths

log = logging.getLogger(__name__)

NEW_PREFIX = "new-"
RESERVED_MARK = "reserved"
REMOVING_PREFIX = "rm-"


def is_reserved(snapshots_dir: str, name: str) -> bool:
    """Whether entry `name` of `snapshots/` is a directory built ahead of the Prepare that will own it."""
    return os.path.lexists(os.path.join(snapshots_dir, name, RESERVED_MARK))


class Layout:
    """Paths and filesystem steps under one root; methods are blocking (run them off the loop)."""

    def __init__(self, root: str) -> None:
        self.root = os.path.realpath(root)
        """Resolved: a root reached through a symlink must not let an adopted source inside the
        real root pass the outside-the-root check, and mounts name the real directories."""
        self.snapshots_dir = os.path.join(self.root, "snapshots")
        self.metadata_path = os.path.join(self.root, "metadata.db")
        self.lowers = LowerPaths(self.root, self.snapshots_dir)

    def create_root(self) -> None:
        """0700 directories and a 0600 database whatever the umask: snapshots hold images' files."""
        check_root(self.root)
        make_dirs(self.snapshots_dir, 0o700)
        if not os.path.lexists(self.metadata_path):  # an existing one is checked by the store
            create_private_file(self.metadata_path)

    def has_snapshot_dirs(self) -> bool:
        """Whether any snapshot was ever installed here (an entry not being built, reserved or deleted)."""
        return any(not name.startswith((NEW_PREFIX, REMOVING_PREFIX)) and not is_reserved(self.snapshots_dir, name)
                   for name in self.entries())

    def lock(self) -> int:
        """One process per root: the in-memory metadata mirror assumes no other writer.

        An flock dies with its process (kill -9 included), so a crash never leaves a stale lock.
        """
        path = os.path.join(self.root, "lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UnusableStoreError(f"another cvmfs-snapshotter uses root {self.root} (it holds {path}):"
                                     " stop it first, or give this one another root") from None
        return fd

    def path(self, snapshot_id: int) -> str:
        return os.path.join(self.snapshots_dir, str(snapshot_id))

    def fs_path(self, snapshot_id: int) -> str:
        return os.path.join(self.snapshots_dir, str(snapshot_id), "fs")

    def work_path(self, snapshot_id: int) -> str:
        return os.path.join(self.snapshots_dir, str(snapshot_id), "work")

    def wh_upper_path(self, snapshot_id: int) -> str:
        return os.path.join(self.snapshots_dir, str(snapshot_id), "wh-upper")

    def wh_lower_path(self, snapshot_id: int) -> str:
        return os.path.join(self.snapshots_dir, str(snapshot_id), "wh-lower")

    def build(self, with_work: bool, owner: tuple[int, int] | None = None) -> str:
        """A fresh `new-*` directory with fs (0755, owned by `owner`, the parent's fs's uid and gid)
        and maybe work."""
        staged = tempfile.mkdtemp(prefix=NEW_PREFIX, dir=self.snapshots_dir)
        try:
            fs = os.path.join(staged, "fs")
            os.mkdir(fs)
            os.chmod(fs, 0o755)  # independent of the daemon's umask, as containerd's suite expects
            if with_work:
                os.mkdir(os.path.join(staged, "work"))
                os.chmod(os.path.join(staged, "work"), 0o711)
            if owner is not None:
                os.lchown(fs, *owner)
        except BaseException:
            self.discard(staged)
            raise
        return staged

    def build_link(self, source: str, shadows: str = "") -> str:
        """A fresh `new-*` directory whose fs is a symlink to an adopted source (never walked),
        plus `wh-upper`/`wh-lower` symlinks into `shadows` when it has whiteout shadows."""
        staged = tempfile.mkdtemp(prefix=NEW_PREFIX, dir=self.snapshots_dir)
        try:
            os.symlink(source, os.path.join(staged, "fs"))
            if shadows:
                os.symlink(os.path.join(shadows, "upper"), os.path.join(staged, "wh-upper"))
                os.symlink(os.path.join(shadows, "lower"), os.path.join(staged, "wh-lower"))
        except BaseException:
            self.discard(staged)
            raise
        return staged

    def mark_reserved(self, staged: str) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        os.close(os.open(os.path.join(staged, RESERVED_MARK), flags, 0o600))

    def unmark_reserved(self, snapshot_id: int) -> None:
        os.unlink(os.path.join(self.path(snapshot_id), RESERVED_MARK))

    def install(self, staged: str, snapshot_id: int) -> None:
        """Rename a staged directory to its id; a leftover at that id is an orphan and is replaced."""
        target = self.path(snapshot_id)
        if os.path.lexists(target):
            log.warning("replacing orphaned snapshot directory %s", target)
            self.discard(target)
        os.rename(staged, target)  # made durable by sync_dir() before the metadata commits

    def aside_path(self, path: str) -> str:
        """The `rm-*` name `path` is renamed to for deletion (`path` itself if it is one already)."""
        name = os.path.basename(path)
        if name.startswith(REMOVING_PREFIX):
            return path
        return os.path.join(self.snapshots_dir, f"{REMOVING_PREFIX}{name}-{uuid.uuid4().hex[:12]}")

    def set_aside(self, path: str, aside: str | None = None) -> str | None:
        """Atomically disown a directory by renaming it to `aside` (default `aside_path(path)`);
        None if it is already gone."""
        aside = aside or self.aside_path(path)
        if aside == path:
            return path if os.path.lexists(path) else None
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return None
        return aside

    def discard(self, path: str) -> None:
        """Rename aside, then delete without following symlinks."""
        aside = self.set_aside(path)
        if aside is not None:
            delete_tree(aside)

    def discard_id(self, snapshot_id: int) -> None:
        self.discard(self.path(snapshot_id))

    def entries(self) -> list[str]:
        """Entries of `snapshots/` that belong to snapshots (or once did): not the shared hider."""
        return [name for name in os.listdir(self.snapshots_dir) if name != HIDER_DIR]

    def sync_dir(self) -> None:
        """Make renames in `snapshots/` durable before the metadata that depends on them."""
        fsync_dir(self.snapshots_dir)


def delete_tree(path: str) -> None:
    """rmtree that never follows symlinks (shutil's fd-based walk) and logs what it cannot delete."""

    def report(function, failed, exc_info):  # type: ignore[no-untyped-def]
        log.warning("failed to delete %s: %s", failed, exc_info[1])

    if os.path.islink(path) or not os.path.isdir(path):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        return
    shutil.rmtree(path, onerror=report)
