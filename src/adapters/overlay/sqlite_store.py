"""Snapshot metadata in SQLite: containerd's storage.MetaStore semantics, durably.

WAL mode with synchronous=FULL: a committed transaction survives kill -9 and
power loss, readers never block the writer. Parents are referenced by id, so a
commit (which renames the key) keeps every child link and the directory id.
Connections are per thread: the snapshotter runs writes on one thread and
reads on a small pool.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from snapmux.adapters.overlay.store_checks import (
    RESTORE,
    SCHEMA_VERSION,
    UnusableStoreError,
    check_contents,
    check_openable,
)
from snapmux.domain.errors import AlreadyExistsError, FailedPreconditionError, InvalidArgumentError, NotFoundError
from snapmux.domain.model import Info, Kind, Usage, utcnow

_SCHEMA = """
CREATE TABLE IF NOT EXISTS snapshots (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    name      TEXT NOT NULL UNIQUE,
    kind      INTEGER NOT NULL,
    parent_id INTEGER REFERENCES snapshots(id) ON DELETE RESTRICT,
    labels    TEXT NOT NULL,
    created   TEXT NOT NULL,
    updated   TEXT NOT NULL,
    size      INTEGER NOT NULL DEFAULT 0,
    inodes    INTEGER NOT NULL DEFAULT 0,
    source    TEXT NOT NULL DEFAULT '',
    shadows   TEXT NOT NULL DEFAULT '',
    flat      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS snapshots_parent ON snapshots(parent_id);
"""

_SELECT = """
SELECT s.id, s.name, s.kind, COALESCE(p.name, ''), s.labels, s.created, s.updated,
       s.size, s.inodes, s.source, s.parent_id, s.shadows, s.flat
FROM snapshots s LEFT JOIN snapshots p ON p.id = s.parent_id
"""

_CHAIN = """
WITH RECURSIVE chain(id, parent_id, name, source, shadows, flat, depth) AS (
    SELECT id, parent_id, name, source, shadows, flat, 0 FROM snapshots WHERE id = ?
    UNION ALL
    SELECT s.id, s.parent_id, s.name, s.source, s.shadows, s.flat, c.depth + 1
    FROM snapshots s JOIN chain c ON s.id = c.parent_id
)
SELECT id, name, source, shadows, flat FROM chain ORDER BY depth
"""


@dataclass(frozen=True)
class Row:
    """One snapshot as stored: its Info plus what only the snapshotter needs."""

    id: int
    info: Info
    usage: Usage
    source: str
    parent_id: int | None
    shadows: str = ""
    flat: bool = False


@dataclass(frozen=True)
class Link:
    """One element of a parent chain: enough to build mounts and check adopted sources."""

    id: int
    name: str
    source: str
    shadows: str = ""
    """An adopted layer's whiteout shadows (`upper/`, `lower/`), mounted around its source."""
    flat: bool = False
    """An adopted flattened chain: its source holds every parent's files too, none is mounted."""


def _row(values: tuple) -> Row:
    sid, name, kind, parent, labels, created, updated, size, inodes, source, parent_id, shadows, flat = values
    info = Info(
        name, Kind(kind), parent, json.loads(labels), datetime.fromisoformat(created), datetime.fromisoformat(updated)
    )
    return Row(sid, info, Usage(size, inodes), source, parent_id, shadows, bool(flat))


class Transaction:
    """Queries and changes inside one SQLite transaction; raises containerd's errdefs conditions."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """One job of a batched transaction: its changes go back alone if it fails."""
        self._db.execute("SAVEPOINT job")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK TO job")
            self._db.execute("RELEASE job")
            raise
        self._db.execute("RELEASE job")

    def find(self, key: str) -> Row | None:
        found = self._db.execute(_SELECT + " WHERE s.name = ?", (key,)).fetchone()
        return _row(found) if found else None

    def get(self, key: str) -> Row:
        row = self.find(key)
        if row is None:
            raise NotFoundError(f"snapshot {key}: not found")
        return row

    def get_absent(self, key: str) -> None:
        if self.find(key) is not None:
            raise AlreadyExistsError(f"snapshot {key}: already exists")

    def get_by_id(self, snapshot_id: int) -> Row:
        found = self._db.execute(_SELECT + " WHERE s.id = ?", (snapshot_id,)).fetchone()
        if found is None:
            raise NotFoundError(f"snapshot id {snapshot_id}: not found")
        return _row(found)

    def chain(self, snapshot_id: int) -> list[Link]:
        """The snapshot itself first, then its parents, nearest first."""
        return [Link(sid, name, source, shadows, bool(flat))
                for sid, name, source, shadows, flat in self._db.execute(_CHAIN, (snapshot_id,))]

    def rows(self) -> Iterator[Row]:
        for values in self._db.execute(_SELECT + " ORDER BY s.id"):
            yield _row(values)

    def any_adopted(self) -> bool:
        return self._db.execute("SELECT 1 FROM snapshots WHERE source != '' LIMIT 1").fetchone() is not None

    def ids(self) -> set[int]:
        return {sid for (sid,) in self._db.execute("SELECT id FROM snapshots")}

    def parent_for_child(self, parent: str) -> Row | None:
        if not parent:
            return None
        row = self.find(parent)
        if row is None:
            raise NotFoundError(f'missing parent "{parent}" bucket: not found')
        if row.info.kind != Kind.COMMITTED:
            raise InvalidArgumentError(f'parent "{parent}" is not committed snapshot: invalid argument')
        return row

    def insert(
        self,
        kind: Kind,
        key: str,
        parent: Row | None,
        labels: Mapping[str, str] | None,
        source: str = "",
        shadows: str = "",
        flat: bool = False,
        snapshot_id: int | None = None,
    ) -> int:
        """`snapshot_id`: the id to use (one reserved for it); None: SQLite's next."""
        if self.find(key) is not None:
            raise AlreadyExistsError(f"snapshot {key}: already exists")
        now = utcnow().isoformat()
        cursor = self._db.execute(
            "INSERT INTO snapshots (id, name, kind, parent_id, labels, created, updated, source, shadows, flat)"
            " VALUES (?,?,?,?,?,?,?,?,?,?)",
            (snapshot_id, key, int(kind), parent.id if parent else None, json.dumps(dict(labels or {})), now, now,
             source, shadows, int(flat)),
        )
        return int(cursor.lastrowid)

    def next_id(self) -> int:
        """The id SQLite would give the next row: above every id ever used (AUTOINCREMENT)."""
        (used,) = self._db.execute(
            "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'snapshots'), 0),"
            " COALESCE((SELECT MAX(id) FROM snapshots), 0))").fetchone()
        return int(used) + 1

    def commit_active(self, row: Row, name: str, labels: Mapping[str, str] | None, usage: Usage) -> None:
        """containerd's storage.CommitActive, checks in its order: the name first, then the kind."""
        if self.find(name) is not None:
            raise AlreadyExistsError(f"committed snapshot {name}: already exists")
        if row.info.kind != Kind.ACTIVE:
            raise FailedPreconditionError(f'snapshot "{row.info.name}" is not active: failed precondition')
        now = utcnow().isoformat()
        self._db.execute(
            "UPDATE snapshots SET name=?, kind=?, labels=?, created=?, updated=?, size=?, inodes=? WHERE id=?",
            (name, int(Kind.COMMITTED), json.dumps(dict(labels or {})), now, now, usage.size, usage.inodes, row.id),
        )

    def delete(self, row: Row) -> None:
        if self._db.execute("SELECT 1 FROM snapshots WHERE parent_id = ? LIMIT 1", (row.id,)).fetchone():
            raise FailedPreconditionError("cannot remove snapshot with child: failed precondition")
        self._db.execute("DELETE FROM snapshots WHERE id = ?", (row.id,))

    def replace_info(self, row: Row, info: Info) -> None:
        self._db.execute(
            "UPDATE snapshots SET labels=?, updated=? WHERE id=?",
            (json.dumps(dict(info.labels)), info.updated.isoformat(), row.id),
        )


class SqliteMetadataStore:
    """Opens one connection per thread on `<root>/metadata.db`; `transaction()` is the only door."""

    def __init__(self, path: str, expect_snapshots: bool = False) -> None:
        """Checks the store before any write (`store_checks`); `expect_snapshots`: the root holds
        snapshot directories, so an empty store means a lost one, not a new root."""
        self.path = path
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        check_openable(path)
        probe = sqlite3.connect(path, isolation_level=None, timeout=60)
        try:
            check_contents(probe, path, expect_snapshots)
        finally:
            probe.close()
        try:
            self._connection().executescript(_SCHEMA)
            self._add_columns()
            self._connection().execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as error:
            self.close()
            raise UnusableStoreError(f"metadata store {path} cannot be opened ({error}): {RESTORE}") from None

    def _add_columns(self) -> None:
        """Roots made before whiteout shadows (or flattened chains) existed lack the column; every
        old row has none."""
        columns = {name for _, name, *_ in self._connection().execute("PRAGMA table_info(snapshots)")}
        for name, declaration in (("shadows", "TEXT NOT NULL DEFAULT ''"), ("flat", "INTEGER NOT NULL DEFAULT 0")):
            if name not in columns:
                self._connection().execute(f"ALTER TABLE snapshots ADD COLUMN {name} {declaration}")

    def _connection(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=60)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
            self._local.db = db
            with self._lock:
                self._connections.append(db)
        return db

    @contextmanager
    def transaction(self, write: bool = False) -> Iterator[Transaction]:
        """BEGIN IMMEDIATE for writes (one writer at a time), a consistent snapshot for reads."""
        db = self._connection()
        db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            yield Transaction(db)
            db.execute("COMMIT" if write else "ROLLBACK")
        except BaseException:
            if db.in_transaction:  # also after a failed COMMIT (disk full): or every later BEGIN fails
                db.execute("ROLLBACK")
            raise

    def query(self) -> Transaction:
        """No explicit transaction: for reads that are a single statement (each sees the latest commit)."""
        return Transaction(self._connection())

    def close(self) -> None:
        with self._lock:
            for db in self._connections:
                db.close()
            self._connections.clear()
