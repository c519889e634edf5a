"""Whiteout shadows: what makes a foreign layer's OCI deletions visible to overlayfs.

A foreign layer (unpacked.cern.ch, no publisher marker) keeps deletions as `.wh.<name>`
files and `.wh..wh..opq` markers, which overlayfs shows as plain files. The layout is
read-only CVMFS, so instead of converting the layer we build two small trees beside it,
under the snapshotter root, once per layer:

    <root>/whiteouts/<hex>/upper   a 0/0 char device at every `.wh.*` path: hides the markers
    <root>/whiteouts/<hex>/lower   `d/<name>` 0/0 for each `d/.wh.<name>`, and `d` opaque for
                                   each `d/.wh..wh..opq`: hides what the layer deletes below it
    <root>/whiteouts/<hex>/ready   JSON counts, written last; `{"clean": true}` needs no shadows

Mounted nearest first as `upper:layerfs:lower:<layers below>` (verified on a real overlay
mount): this layer's own files stay, lower layers' deleted files and replaced directories go,
and no `.wh.` file is visible. Each result is built in a `.tmp-*` directory and renamed into
place, so a killed or failed scan leaves nothing a Prepare would use. Blocking throughout:
the scanner runs it on its own threads.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass

from snapmux.adapters.cvmfs.whiteout_names import (
    META_PREFIX,
    OPAQUE_MARKERS,
    OPAQUE_XATTR,
    USER_OPAQUE_XATTR,
    WHITEOUT_PREFIX,
)
from snapmux.adapters.durable import fsync_dir

log = logging.getLogger(__name__)

READY = "ready"
TMP_PREFIX = ".tmp-"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class ScanStopped(Exception):
    """The daemon is shutting down; the partial result is discarded."""


@dataclass(frozen=True)
class Shadows:
    """A usable scan result: `path` holds `upper/` and `lower/` unless the layer is clean."""

    path: str
    clean: bool

    @property
    def upper(self) -> str:
        return os.path.join(self.path, "upper")

    @property
    def lower(self) -> str:
        return os.path.join(self.path, "lower")


class ShadowCache:
    """`<root>/whiteouts/`: one directory per scanned layer, complete or absent."""

    def __init__(self, root: str, userxattr: bool) -> None:
        self.dir = os.path.join(os.path.abspath(root), "whiteouts")
        self.opaque_xattr = USER_OPAQUE_XATTR if userxattr else OPAQUE_XATTR

    def path(self, hex_digest: str) -> str:
        return os.path.join(self.dir, hex_digest)

    def lookup(self, hex_digest: str) -> Shadows | None:
        """O(1): the ready file, then (unless clean) the two trees; anything missing means re-scan."""
        path = self.path(hex_digest)
        try:
            with open(os.path.join(path, READY)) as handle:
                clean = bool(json.load(handle).get("clean"))
        except (OSError, ValueError, AttributeError):
            return None
        found = Shadows(path, clean)
        if not clean and not (os.path.isdir(found.upper) and os.path.isdir(found.lower)):
            return None
        return found

    def build(self, hex_digest: str, layerfs: str, stop: threading.Event | None = None) -> Shadows:
        """Walks `layerfs` once; the result appears atomically (rename) or not at all."""
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        staged = tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{hex_digest}-", dir=self.dir)
        try:
            writer = _ShadowWriter(layerfs, staged, self.opaque_xattr, stop)
            counts = writer.run()
            _write_ready(staged, counts)
            self._replace(staged, self.path(hex_digest))
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise
        return Shadows(self.path(hex_digest), counts["clean"])

    def _replace(self, staged: str, target: str) -> None:
        """A leftover at `target` (partial by an older version, or vanished trees) goes aside first."""
        if os.path.lexists(target):
            self._discard(target)
        os.rename(staged, target)
        fsync_dir(self.dir)

    def _discard(self, path: str) -> None:
        """Renamed into a `.tmp-old-*` directory first, so a kill mid-delete leaves only what
        `purge_partial` clears at the next start, never a half-deleted result in place."""
        aside = tempfile.mkdtemp(prefix=f"{TMP_PREFIX}old-", dir=self.dir)
        os.rename(path, os.path.join(aside, "old"))
        shutil.rmtree(aside, ignore_errors=True)

    def reclaim(self, keep: set[str], layer_present: Callable[[str], bool]) -> list[str]:
        """Blocking: removes the shadows no snapshot uses (not in `keep`) of layers that left the
        repository; those can serve nothing more. A present layer's shadows stay: they spare its
        next pull a download and a full scan, at the cost of a few empty files. Each goes aside
        first (rename), so a kill mid-delete leaves only a `.tmp-*` that startup purges."""
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        reclaimed = []
        for name in sorted(names):
            if name.startswith(TMP_PREFIX) or name in keep or layer_present(name):
                continue
            self._discard(self.path(name))
            reclaimed.append(name)
        if reclaimed:
            fsync_dir(self.dir)
        return reclaimed

    def purge_partial(self) -> None:
        """At startup: scans killed mid-way left `.tmp-*` directories nobody will finish."""
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return
        for name in names:
            if name.startswith(TMP_PREFIX):
                shutil.rmtree(os.path.join(self.dir, name), ignore_errors=True)


class _ShadowWriter:
    """One walk of a layer, writing `upper/` and `lower/` under a staged directory."""

    def __init__(self, layerfs: str, staged: str, opaque_xattr: str, stop: threading.Event | None) -> None:
        self.layerfs = layerfs
        self.upper = os.path.join(staged, "upper")
        self.lower = os.path.join(staged, "lower")
        self.opaque_xattr = opaque_xattr
        self.stop = stop
        self.upper_dirs: set[str] = set()
        self.deleted: set[str] = set()
        """Paths whose lower layers this layer deletes (`d/.wh.x`): all below them is hidden already."""
        self.counts = {"whiteouts": 0, "opaque": 0, "hidden": 0}

    def run(self) -> dict:
        os.mkdir(self.upper)
        os.mkdir(self.lower)
        self.upper_dirs.add("")
        if os.path.islink(self.layerfs):
            raise ValueError(f"{self.layerfs} is a symlink; a layer's root must be its own directory")
        for dirpath, dirnames, filenames, _ in os.fwalk(self.layerfs, onerror=_raise):  # never through a symlink
            if self.stop is not None and self.stop.is_set():
                raise ScanStopped(self.layerfs)
            relative = os.path.relpath(dirpath, self.layerfs)
            relative = "" if relative == "." else relative
            for name in [n for n in dirnames + filenames if n.startswith(WHITEOUT_PREFIX)]:
                self._whiteout(relative, name)
            dirnames[:] = [n for n in dirnames if not n.startswith(WHITEOUT_PREFIX)]
        self._copy_dir_attributes()
        clean = self.counts["hidden"] == 0
        return {**self.counts, "clean": clean}

    def _whiteout(self, relative: str, name: str) -> None:
        self._upper_dir(relative)
        _mknod_whiteout(os.path.join(self.upper, relative, name))
        self.counts["hidden"] += 1
        if self._below_deleted(relative):
            return  # `d/.wh.x` and a new `d/x/` with markers of its own: x's lowers are gone already
        if name in OPAQUE_MARKERS:
            directory = self._lower_dir(relative)
            os.setxattr(directory, self.opaque_xattr, b"y", follow_symlinks=False)
            self.counts["opaque"] += 1
        elif not name.startswith(META_PREFIX):
            deleted = name[len(WHITEOUT_PREFIX) :]
            _mknod_whiteout(os.path.join(self._lower_dir(relative), deleted))
            self.deleted.add(os.path.join(relative, deleted))
            self.counts["whiteouts"] += 1

    def _below_deleted(self, relative: str) -> bool:
        """os.fwalk is top-down: a directory's own `.wh.` names are seen before what is inside it."""
        while relative:
            if relative in self.deleted:
                return True
            relative = os.path.dirname(relative)
        return False

    def _upper_dir(self, relative: str) -> None:
        """`upper/` is the topmost layer: its directories must look like the layer's own (below)."""
        os.makedirs(os.path.join(self.upper, relative), exist_ok=True)
        while relative:
            self.upper_dirs.add(relative)
            relative = os.path.dirname(relative)

    def _lower_dir(self, relative: str) -> str:
        directory = os.path.join(self.lower, relative)
        os.makedirs(directory, exist_ok=True)
        return directory

    def _copy_dir_attributes(self) -> None:
        """overlayfs shows a merged directory with its topmost copy's owner, mode and times;
        deepest first, so setting a child's times never changes its parent's afterwards."""
        for relative in sorted(self.upper_dirs, key=lambda r: r.count(os.sep) + bool(r), reverse=True):
            source = _open_beneath(self.layerfs, relative)  # both sides by descriptor: a directory
            try:                                             # swapped for a symlink is an error
                st = os.fstat(source)
            finally:
                os.close(source)
            target = _open_beneath(self.upper, relative)
            try:
                os.fchown(target, st.st_uid, st.st_gid)
                os.fchmod(target, stat.S_IMODE(st.st_mode))
                os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
            finally:
                os.close(target)


def _open_beneath(root: str, relative: str) -> int:
    """`root/relative`, a directory, opened one component at a time without following a symlink."""
    fd = os.open(root, _DIR_FLAGS)
    for part in filter(None, relative.split(os.sep)):
        try:
            child = os.open(part, _DIR_FLAGS, dir_fd=fd)
        finally:
            os.close(fd)
        fd = child
    return fd


def _mknod_whiteout(path: str) -> None:
    os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(0, 0))


def _raise(error: OSError) -> None:
    """os.walk skips unreadable directories silently; a partial scan must fail instead."""
    raise error


def _write_ready(staged: str, counts: dict) -> None:
    with open(os.path.join(staged, READY), "w") as handle:
        json.dump(counts, handle)
        handle.flush()
        os.fsync(handle.fileno())
