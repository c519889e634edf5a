"""Modes of what the daemons create, never left to the umask.

The daemons run as root and may be started under any umask (a supervisor's, a shell's 000);
what they create must be exactly as open as meant: directories and state files for the
daemon alone unless a group is configured. `os.makedirs(mode=...)` applies the mode to the
last directory only (the others get 0777 & ~umask), and `open()` and SQLite create files
0666 & ~umask, hence these helpers.
"""

from __future__ import annotations

import os


def make_dirs(path: str, mode: int = 0o700, gid: int | None = None) -> None:
    """Creates the missing directories of `path`, each with exactly `mode` and group `gid`;
    existing directories are left as they are (an operator's choice)."""
    path = os.path.abspath(path)
    if os.path.isdir(path):
        return
    make_dirs(os.path.dirname(path), mode, gid)
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        if os.path.isdir(path):
            return  # created meanwhile by someone else: theirs to set
        raise
    os.chmod(path, mode)
    if gid is not None:
        os.chown(path, -1, gid)


def create_private_file(path: str, mode: int = 0o600) -> None:
    """Creates `path` with exactly `mode` when absent (SQLite gives its -wal/-shm files the
    database's mode); an existing file is never truncated or changed."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
