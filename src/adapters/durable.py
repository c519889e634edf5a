"""Durability helpers shared by the storage adapters."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator

from snapmux.domain.errors import ResourceExhaustedError

_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def fsync_dir(path: str) -> None:
    """A rename is durable only once its directory is synced: do it before anything relies on it."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: str, data: bytes, prefix: str = ".tmp-") -> None:
    """Readers see the old file or the whole new one, never a part, even across a crash: the data
    is written and fsynced beside `path` (a 0600 file named `prefix*`), renamed over it, and the
    rename synced. A failure leaves no staged file behind."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, staged = tempfile.mkstemp(prefix=prefix, dir=folder)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(staged, path)
    except BaseException:
        os.unlink(staged)
        raise
    fsync_dir(folder)


def out_of_space(error: BaseException, where: str) -> ResourceExhaustedError | None:
    """A write that failed because the filesystem (or the quota) under `where` is full, as the
    caller's error (RESOURCE_EXHAUSTED, saying so); None for any other failure."""
    full = isinstance(error, OSError) and error.errno in _FULL_ERRNOS
    full = full or getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
    if not full:
        return None
    return ResourceExhaustedError(f"disk full: no space left on device under {where} ({error})")


def syncfs(path: str) -> None:
    """One syncfs for a whole tree (a layer, a chain) instead of an fsync per file."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


@contextlib.contextmanager
def built_aside(final: str, prefix: str) -> Iterator[str]:
    """A directory tree that appears at `final` whole or not at all: built in a scratch folder
    beside it (`prefix*`, which a crash may leave for the next run to remove), synced, renamed into
    place, and the rename synced. An error inside leaves nothing at `final` and no scratch."""
    scratch = tempfile.mkdtemp(prefix=prefix, dir=os.path.dirname(final))
    try:
        yield scratch
        syncfs(scratch)
        os.rename(scratch, final)
        fsync_dir(os.path.dirname(final))
    finally:
        if os.path.lexists(scratch):
            shutil.rmtree(scratch)


def remove_entry(path: str) -> None:
    """A leftover scratch file or tree, never followed through a symlink."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)
