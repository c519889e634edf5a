"""Flattened chains: an image prefix as one plain tree, so it mounts as one lower directory.

Chain k is chain k-1 (cloned with hard links: no data copied) with layer k applied:
a 0/0 char device (an overlay whiteout, as the publisher writes them) deletes the path,
an opaque directory (`trusted.overlay.opaque=y`) replaces what was below it, anything
else replaces or merges. The result holds no whiteouts and no overlay xattrs. Built in
`.chains/<xx>/.tmp-<hex>-*`, synced, renamed into place: a chain directory that exists
is complete (ducc.py). Blocking throughout; the caller holds the chain's lock.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat

from snapmux.adapters.cvmfs.ducc import chain_dir, remove_leftovers, scratch_prefix
from snapmux.adapters.cvmfs.whiteout_names import OPAQUE_XATTR, OVERLAY_XATTR_PREFIXES
from snapmux.adapters.durable import built_aside, remove_entry



def build_chain(base: str, chain_hex: str, parent_hex: str | None, layerfs: str) -> bool:
    """Writes chain `chain_hex` = chain `parent_hex` (None: empty) + `layerfs`; False if it exists."""
    final = chain_dir(base, chain_hex)
    if os.path.lexists(final):
        return False
    os.makedirs(os.path.dirname(final), exist_ok=True)
    remove_leftovers(os.path.dirname(final), chain_hex)
    with built_aside(final, scratch_prefix(chain_hex)) as scratch:
        if parent_hex is not None:
            _clone(chain_dir(base, parent_hex), scratch)
        _apply(layerfs, scratch)
    return True


def _clone(source: str, target: str) -> None:
    """Directories recreated, everything else hard-linked (a copy where links are refused)."""
    _copy_meta(source, target)
    for entry in os.scandir(source):
        path = os.path.join(target, entry.name)
        if entry.is_dir(follow_symlinks=False):
            os.mkdir(path, 0o755)
            _clone(entry.path, path)
        else:
            _link_or_copy(entry.path, path)
    _copy_times(source, target)


def _apply(layer: str, target: str) -> None:
    if _opaque(layer):
        _empty(target)
    _copy_meta(layer, target)
    for entry in os.scandir(layer):
        path = os.path.join(target, entry.name)
        info = entry.stat(follow_symlinks=False)
        if stat.S_ISCHR(info.st_mode) and info.st_rdev == os.makedev(0, 0):
            _remove(path)
        elif stat.S_ISDIR(info.st_mode):
            if not os.path.isdir(path) or os.path.islink(path):
                _remove(path)
                os.mkdir(path, 0o755)
            _apply(entry.path, path)
        else:
            _remove(path)
            _link_or_copy(entry.path, path)
    _copy_times(layer, target)


def _opaque(path: str) -> bool:
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


def _empty(folder: str) -> None:
    for name in os.listdir(folder):
        _remove(os.path.join(folder, name))


def _remove(path: str) -> None:
    if os.path.lexists(path):
        remove_entry(path)


def _link_or_copy(source: str, target: str) -> None:
    info = os.lstat(source)
    if stat.S_ISREG(info.st_mode):
        try:
            os.link(source, target, follow_symlinks=False)
            return
        except OSError as error:
            if error.errno not in (errno.EMLINK, errno.EXDEV, errno.EPERM):
                raise
        shutil.copyfile(source, target, follow_symlinks=False)
    elif stat.S_ISLNK(info.st_mode):
        os.symlink(os.readlink(source), target)
    elif stat.S_ISFIFO(info.st_mode):
        os.mkfifo(target, 0o600)
    else:
        os.mknod(target, info.st_mode, info.st_rdev)
    _copy_meta(source, target)
    _copy_times(source, target)


def _copy_meta(source: str, target: str) -> None:
    """Owner, mode, xattrs (never the overlay ones: a chain is a plain tree)."""
    info = os.lstat(source)
    os.lchown(target, info.st_uid, info.st_gid)
    if not stat.S_ISLNK(info.st_mode):
        os.chmod(target, stat.S_IMODE(info.st_mode))
    with contextlib.suppress(OSError):
        for name in os.listxattr(source, follow_symlinks=False):
            if not name.startswith(OVERLAY_XATTR_PREFIXES):
                os.setxattr(target, name, os.getxattr(source, name, follow_symlinks=False), follow_symlinks=False)


def _copy_times(source: str, target: str) -> None:
    info = os.lstat(source)
    os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns), follow_symlinks=False)
