"""What must hold before the snapshotter touches its root and `metadata.db`, and how it says so.

The metadata store is the single source of truth: a store that cannot be read as ours must
stop the daemon with one line naming the file and what to do, never a traceback and never a
silent reset (a fresh store would make Cleanup delete every snapshot directory). So every
check here only reads, and runs before the first write (even `PRAGMA journal_mode=WAL`
writes the file's header).
"""

from __future__ import annotations

import os
import sqlite3

SCHEMA_VERSION = 1
"""`PRAGMA user_version` of the stores this code writes (0: made before it was recorded)."""

REQUIRED_COLUMNS = frozenset({"id", "name", "kind", "parent_id", "labels", "created", "updated", "size", "inodes",
                              "source"})
"""`shadows` is added to older stores at open, so it is not required."""

RESTORE = "move it aside or restore it"


class UnusableStoreError(OSError):
    """The root or its metadata store cannot be used as it is; the operator must act (exit 1)."""


def _unusable(path: str, what: str, todo: str = RESTORE) -> UnusableStoreError:
    return UnusableStoreError(f"metadata store {path} {what}: {todo}")


def check_root(root: str) -> None:
    if os.path.lexists(root) and not os.path.isdir(root):
        raise UnusableStoreError(f"snapshotter root {root} is not a directory: move it aside or choose another root")


def check_openable(path: str) -> None:
    """The file itself: SQLite would only say "unable to open database file"."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    except OSError as error:
        raise _unusable(path, f"cannot be opened for writing ({error.strerror})",
                        "check that it is a regular file the daemon may read and write") from None
    os.close(fd)


def check_contents(db: sqlite3.Connection, path: str, expect_snapshots: bool) -> bool:
    """Read-only checks of an opened store; returns whether it is new (no tables yet).

    `expect_snapshots`: the root holds snapshot directories, so a new store would lose them.
    """
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        problems = [row[0] for row in db.execute("PRAGMA quick_check(1)")]
        columns = {row[1] for row in db.execute("PRAGMA table_info(snapshots)")}
    except sqlite3.DatabaseError as error:
        if "not a database" in str(error):
            raise _unusable(path, "is not a SQLite database") from None
        raise _unusable(path, f"is corrupt ({error})") from None
    if problems != ["ok"]:
        raise _unusable(path, f"is corrupt ({problems[0]})")
    if version > SCHEMA_VERSION:
        raise _unusable(path, f"has schema version {version}, newer than this snapshotter's {SCHEMA_VERSION}",
                        "run the version that wrote it, or restore an older copy")
    if not tables:
        if expect_snapshots:
            raise _unusable(path, "is empty but the root holds snapshot directories",
                            "restore it (a new store would discard them)")
        return True
    if "snapshots" not in tables or not REQUIRED_COLUMNS <= columns:
        found = ", ".join(sorted(tables))
        raise _unusable(path, f"is not a snapshotter metadata store (tables: {found})")
    return False
