"""The ports of the hexagon: what the application needs from the outside world.

They speak domain types only and fail with `snapmux.domain.errors`. Each port's
specification is its contract suite in `tests/contract/`; every implementation (in-memory
fake, SQLite and overlayfs, gRPC client, namespace router, measuring decorator) runs it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Protocol, runtime_checkable

from snapmux.domain.model import Info, Mount, SnapshotterAddress, Usage


@runtime_checkable
class SnapshotService(Protocol):
    """containerd's Snapshotter interface, async; specified by `tests/contract/snapshot_service.py`.

    Keys are opaque strings, never paths; an empty key, a NUL or an oversize key or label is
    InvalidArgumentError, and a call that fails changes nothing.
    """

    async def stat(self, key: str) -> Info:
        """The snapshot named `key` (active, view or committed); NotFoundError when there is none."""
        ...

    async def update(self, info: Info, fieldpaths: Sequence[str] = ()) -> Info:
        """Changes labels only: each `labels.<k>` path sets or drops one, `labels` or no path
        replaces them all; any other path is InvalidArgumentError. Returns the snapshot as stored."""
        ...

    async def usage(self, key: str) -> Usage:
        """Disk space and inodes the snapshot itself uses (not its parents); NotFoundError if unknown."""
        ...

    async def mounts(self, key: str) -> list[Mount]:
        """The mounts Prepare or View returned, again; a committed snapshot is FailedPreconditionError."""
        ...

    async def prepare(self, key: str, parent: str = "", labels: Mapping[str, str] | None = None) -> list[Mount]:
        """A new writable snapshot on committed `parent` ("" for none): an existing key is
        AlreadyExistsError (also the remote-snapshot answer: the layer is already there), a missing
        parent NotFoundError, an uncommitted one InvalidArgumentError."""
        ...

    async def view(self, key: str, parent: str = "", labels: Mapping[str, str] | None = None) -> list[Mount]:
        """Prepare's read-only twin: the same errors; a view can be removed but never committed."""
        ...

    async def commit(self, name: str, key: str, labels: Mapping[str, str] | None = None) -> None:
        """Turns active `key` into committed `name` (`key` is gone): a view or committed key is
        FailedPreconditionError, an unknown one NotFoundError, a taken name AlreadyExistsError."""
        ...

    async def remove(self, key: str) -> None:
        """Deletes one snapshot: NotFoundError if unknown, FailedPreconditionError while it has children."""
        ...

    def walk(self, filters: Sequence[str] = ()) -> AsyncIterator[Info]:
        """containerd's Walk / the List RPC: every snapshot matching any filter (containerd's filter
        syntax, `snapmux.domain.filters`); a malformed filter is InvalidArgumentError."""
        ...

    async def cleanup(self) -> None:
        """Reclaims space no snapshot uses (containerd's GC calls it); every snapshot stays."""
        ...


@runtime_checkable
class AddressResolver(Protocol):
    """Finds where a containerd namespace's remote snapshotter listens; specified by
    `tests/contract/address_resolver.py`."""

    async def resolve(self, namespace: str) -> SnapshotterAddress:
        """The same answer each time while nothing changes: an unknown namespace is NotFoundError,
        a name that is no namespace InvalidArgumentError, a backend that cannot answer UnavailableError."""
        ...


@runtime_checkable
class SnapshotForwarder(Protocol):
    """containerd's snapshots calls passed on as they came, serialized: what the demux does with
    most of them, at the cost of a relay rather than of decoding and encoding each message twice.

    `method` is the API's method name ("Stat", "List", ...); request and replies are the wire's
    bytes, untouched. The far side's status comes back as the domain error of its code, with its
    message, as the SnapshotService calls report it."""

    async def forward(self, method: str, request: bytes) -> bytes:
        """One unary call's reply."""
        ...

    async def forward_mounts(self, method: str, request: bytes, type_prefix: str) -> bytes:
        """Prepare, View or Mounts, the reply's mounts marked for the VM: `type_prefix` before each
        type and no target; with "" the reply passes unchanged."""
        ...

    def forward_stream(self, method: str, request: bytes) -> AsyncIterator[bytes]:
        """A server-streaming call (List): each message as the far side sent it."""
        ...


@runtime_checkable
class SnapshotRelay(Protocol):
    """The demux's side of `SnapshotForwarder`: each call's request bytes with what routing reads
    from them (key, labels, commit name, filters), answered with the reply bytes of the VM the
    call belongs to. Implemented by the namespace router and its measuring decorator."""

    async def forward(self, method: str, key: str, request: bytes) -> bytes:
        """Stat, Update (the key is the info's name), Usage and Remove."""
        ...

    async def forward_mounts(self, key: str, request: bytes) -> bytes:
        """Mounts."""
        ...

    async def forward_create(self, method: str, key: str, labels: Mapping[str, str], request: bytes) -> bytes:
        """Prepare and View."""
        ...

    async def forward_commit(self, name: str, key: str, request: bytes) -> bytes:
        """Commit."""
        ...

    def forward_list(self, filters: Sequence[str], request: bytes) -> AsyncIterator[bytes]:
        """List: the messages of one VM, or of every connected one."""
        ...

    async def forward_cleanup(self, request: bytes) -> bytes:
        """Cleanup: one VM, or every connected one."""
        ...


@runtime_checkable
class RemoteSnapshotter(SnapshotForwarder, Protocol):
    """A snapshotter living elsewhere (a microVM), whose connection we own and must close: the demux
    forwards calls to it (`SnapshotForwarder`); a lost connection is UnavailableError naming the VM's
    socket and port."""

    async def healthy(self) -> bool:
        """Cheap liveness probe, never raising; False means the connection should be dropped."""
        ...

    async def close(self) -> None:
        """Releases the connection; calls still in flight end with UnavailableError."""
        ...


@runtime_checkable
class SnapshotterConnector(Protocol):
    """Opens a client to the remote snapshotter a resolver pointed at."""

    async def connect(self, namespace: str, address: SnapshotterAddress) -> RemoteSnapshotter:
        """Connected (one dial done) or UnavailableError at once, saying which address failed and why."""
        ...


@runtime_checkable
class NamespaceMemory(Protocol):
    """Where the demux keeps, across restarts, the namespaces whose VMs it has reached; specified
    by `tests/contract/namespace_memory.py`."""

    async def load(self) -> frozenset[str]:
        """What the last save stored, even after a restart; empty when nothing (usable) was saved."""
        ...

    async def save(self, namespaces: frozenset[str]) -> None:
        """Replaces the whole set, atomically: a crash leaves the old set or the new one."""
        ...


@runtime_checkable
class HealthCheck(Protocol):
    """Whether a daemon (or the backend it depends on) can answer right now, for probes."""

    async def check(self) -> None:
        """Returns when healthy; raises `UnavailableError` saying why not."""
        ...
