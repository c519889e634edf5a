"""The ports of the hexagon: what the application needs from the outside world.

They speak domain types only. Every implementation (in-memory fake, SQLite and
overlayfs, gRPC client, namespace router) runs the same contract suite.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Protocol, runtime_checkable

from snapmux.domain.model import Info, Mount, SnapshotterAddress, Usage


@runtime_checkable
class SnapshotService(Protocol):
    """containerd's Snapshotter interface, async."""

    async def stat(self, key: str) -> Info: ...

    async def update(self, info: Info, fieldpaths: Sequence[str] = ()) -> Info: ...

    async def usage(self, key: str) -> Usage: ...

    async def mounts(self, key: str) -> list[Mount]: ...

    async def prepare(self, key: str, parent: str = "", labels: Mapping[str, str] | None = None) -> list[Mount]: ...

    async def view(self, key: str, parent: str = "", labels: Mapping[str, str] | None = None) -> list[Mount]: ...

    async def commit(self, name: str, key: str, labels: Mapping[str, str] | None = None) -> None: ...

    async def remove(self, key: str) -> None: ...

    def walk(self, filters: Sequence[str] = ()) -> AsyncIterator[Info]:
        """containerd's Walk / the List RPC: every snapshot matching any filter."""
        ...

    async def cleanup(self) -> None: ...


@runtime_checkable
class AddressResolver(Protocol):
    """Finds where a containerd namespace's remote snapshotter listens."""

    async def resolve(self, namespace: str) -> SnapshotterAddress: ...


@runtime_checkable
class RemoteSnapshotter(SnapshotService, Protocol):
    """A SnapshotService living elsewhere (a microVM), whose connection we own and must close."""

    async def healthy(self) -> bool:
        """Cheap liveness probe; False means the connection should be dropped."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class SnapshotterConnector(Protocol):
    """Opens a client to the remote snapshotter a resolver pointed at."""

    async def connect(self, namespace: str, address: SnapshotterAddress) -> RemoteSnapshotter: ...


@runtime_checkable
class NamespaceMemory(Protocol):
    """Where the demux keeps, across restarts, the namespaces whose VMs it has reached."""

    async def load(self) -> frozenset[str]: ...

    async def save(self, namespaces: frozenset[str]) -> None: ...


@runtime_checkable
class HealthCheck(Protocol):
    """Whether a daemon (or the backend it depends on) can answer right now, for probes."""

    async def check(self) -> None:
        """Returns when healthy; raises `UnavailableError` saying why not."""
        ...
