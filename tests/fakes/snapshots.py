"""In-memory SnapshotService with containerd's semantics and no filesystem.

The contract suite runs against it and against every real implementation, so
the demux and resolver unit tests can trust it as a stand-in.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field

from snapmux.domain.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from snapmux.domain.filters import parse_filters
from snapmux.domain.model import Info, Kind, Mount, Usage, apply_update, utcnow, validate_key, validate_labels


@dataclass
class _Snapshot:
    id: int
    info: Info
    usage: Usage = field(default_factory=Usage)


class InMemorySnapshotService:
    def __init__(self, root: str = "/fake") -> None:
        self.root = root
        self._snapshots: dict[str, _Snapshot] = {}
        self._next_id = 1
        self._lock = asyncio.Lock()
        self.calls: list[tuple[str, str]] = []

    def _get(self, key: str) -> _Snapshot:
        try:
            return self._snapshots[key]
        except KeyError:
            raise NotFoundError(f"snapshot {key}: not found") from None

    def _mounts(self, snap: _Snapshot) -> list[Mount]:
        chain = []
        parent = snap.info.parent
        while parent:
            chain.append(f"{self.root}/{self._snapshots[parent].id}/fs")
            parent = self._snapshots[parent].info.parent
        own = f"{self.root}/{snap.id}/fs"
        if not chain:
            mode = "ro" if snap.info.kind == Kind.VIEW else "rw"
            return [Mount("bind", own, options=(mode, "rbind"))]
        if snap.info.kind == Kind.VIEW and len(chain) == 1:
            return [Mount("bind", chain[0], options=("ro", "rbind"))]
        options = [f"lowerdir={':'.join(chain)}"]
        if snap.info.kind == Kind.ACTIVE:
            options = [f"workdir={self.root}/{snap.id}/work", f"upperdir={own}"] + options
        return [Mount("overlay", "overlay", options=tuple(options))]

    async def _create(self, kind: Kind, key: str, parent: str, labels: Mapping[str, str] | None) -> list[Mount]:
        self.calls.append(("prepare" if kind == Kind.ACTIVE else "view", key))
        validate_key(key)
        validate_labels(labels)
        async with self._lock:
            if parent:
                base = self._get(parent)
                if base.info.kind != Kind.COMMITTED:
                    raise InvalidArgumentError(f"parent {parent!r} is not committed snapshot")
            if key in self._snapshots:
                raise AlreadyExistsError(f"snapshot {key}: already exists")
            now = utcnow()
            snap = _Snapshot(self._next_id, Info(key, kind, parent, dict(labels or {}), now, now))
            self._next_id += 1
            self._snapshots[key] = snap
            return self._mounts(snap)

    async def prepare(self, key: str, parent: str = "", labels: Mapping[str, str] | None = None) -> list[Mount]:
        return await self._create(Kind.ACTIVE, key, parent, labels)

    async def view(self, key: str, parent: str = "", labels: Mapping[str, str] | None = None) -> list[Mount]:
        return await self._create(Kind.VIEW, key, parent, labels)

    async def mounts(self, key: str) -> list[Mount]:
        self.calls.append(("mounts", key))
        snap = self._get(key)
        if snap.info.kind == Kind.COMMITTED:
            raise FailedPreconditionError(f"snapshot {key} is committed, not active or view")
        return self._mounts(snap)

    async def commit(self, name: str, key: str, labels: Mapping[str, str] | None = None) -> None:
        self.calls.append(("commit", key))
        validate_key(name, "name")
        validate_labels(labels)
        async with self._lock:
            snap = self._get(key)
            if snap.info.kind != Kind.ACTIVE:
                raise FailedPreconditionError(f"snapshot {key!r} is not active")
            if name in self._snapshots:
                raise AlreadyExistsError(f"snapshot {name}: already exists")
            now = utcnow()
            info = Info(name, Kind.COMMITTED, snap.info.parent, dict(labels or {}), now, now)
            del self._snapshots[key]
            self._snapshots[name] = _Snapshot(snap.id, info, snap.usage)

    async def remove(self, key: str) -> None:
        self.calls.append(("remove", key))
        async with self._lock:
            self._get(key)
            if any(s.info.parent == key for s in self._snapshots.values()):
                raise FailedPreconditionError("cannot remove snapshot with child")
            del self._snapshots[key]

    async def stat(self, key: str) -> Info:
        self.calls.append(("stat", key))
        return self._get(key).info

    async def update(self, info: Info, fieldpaths: Sequence[str] = ()) -> Info:
        self.calls.append(("update", info.name))
        async with self._lock:
            snap = self._get(info.name)
            snap.info = apply_update(snap.info, info, list(fieldpaths))
            return snap.info

    async def usage(self, key: str) -> Usage:
        self.calls.append(("usage", key))
        return self._get(key).usage

    async def walk(self, filters: Sequence[str] = ()) -> AsyncIterator[Info]:
        self.calls.append(("list", ",".join(filters)))
        match = parse_filters(filters)
        for snap in list(self._snapshots.values()):
            if match(snap.info):
                yield snap.info

    async def cleanup(self) -> None:
        self.calls.append(("cleanup", ""))
