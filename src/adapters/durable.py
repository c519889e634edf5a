"""Durability helpers shared by the storage adapters."""

from __future__ import annotations

import os


def fsync_dir(path: str) -> None:
    """A rename is durable only once its directory is synced: do it before anything relies on it."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
