"""The committed metadata, mirrored in memory on the event loop, so reads never leave it.

SQLite stays the source of truth and the only thing writes touch. Every batch
the writer commits hands its changes back to the event loop, which applies them
here before any caller of that batch resumes; only this process writes the
store, so Stat, List and most Mounts are answered without a thread hop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from snapmux.adapters.overlay.sqlite_store import Link, Row
from snapmux.domain.errors import NotFoundError

T = TypeVar("T")


class MetadataCache:
    """Touched only from the event loop thread (the writer posts its changes there)."""

    def __init__(self, rows: Iterable[Row]) -> None:
        self._by_name: dict[str, Row] = {}
        self._by_id: dict[int, Row] = {}
        self._derived: dict[int, tuple[Row, Any]] = {}
        for row in rows:
            self.put(row)

    def get(self, key: str) -> Row:
        row = self._by_name.get(key)
        if row is None:
            raise NotFoundError(f"snapshot {key}: not found")
        return row

    def put(self, row: Row) -> None:
        """Insert or replace by id (a commit renames the key but keeps the id)."""
        old = self._by_id.get(row.id)
        if old is not None and old.info.name != row.info.name:
            del self._by_name[old.info.name]
        self._by_id[row.id] = row
        self._by_name[row.info.name] = row
        self._derived.pop(row.id, None)

    def drop(self, snapshot_id: int) -> None:
        row = self._by_id.pop(snapshot_id, None)
        self._derived.pop(snapshot_id, None)
        if row is not None:
            self._by_name.pop(row.info.name, None)

    def derived(self, row: Row, compute: Callable[[Row], T]) -> T:
        """`compute(row)`, kept until this row changes or goes. Only for what depends on the row
        and its chain: a snapshot's parents are committed, and what `chain` reports of them (id,
        name, source, shadows, flat) never changes while they have children."""
        known = self._derived.get(row.id)
        if known is None or known[0] is not row:
            known = self._derived[row.id] = (row, compute(row))
        return known[1]

    def chain(self, row: Row) -> list[Link]:
        """The snapshot itself first, then its parents, nearest first."""
        links = [Link(row.id, row.info.name, row.source, row.shadows, row.flat)]
        while row.parent_id is not None:
            row = self._by_id[row.parent_id]
            links.append(Link(row.id, row.info.name, row.source, row.shadows, row.flat))
        return links

    def rows(self) -> list[Row]:
        return list(self._by_id.values())
