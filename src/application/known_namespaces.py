"""Which namespaces have a VM, remembered across restarts so that garbage collection still works.

containerd's garbage collector lists snapshots without a namespace; the demux can only fan
that out over the VMs it is connected to. After a restart it is connected to none, and a VM
that containerd does not call again keeps snapshots that GC can no longer see (and so never
removes). `KnownNamespaces` listens to the client cache and remembers every namespace it ever
reached; at startup `reconnect_known` dials them all again, in the background.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from snapmux.application.remote_clients import RemoteSnapshotterCache
from snapmux.domain.errors import DomainError, NotFoundError
from snapmux.domain.model import SnapshotterAddress
from snapmux.domain.ports import NamespaceMemory

log = logging.getLogger(__name__)


class KnownNamespaces:
    """A RemoteSnapshotterListener; with no memory configured it remembers nothing."""

    def __init__(self, memory: NamespaceMemory | None) -> None:
        self._memory = memory
        self._known: set[str] = set()
        self._saving = asyncio.Lock()

    async def load(self) -> frozenset[str]:
        if self._memory is not None:
            self._known = set(await self._memory.load())
        return frozenset(self._known)

    async def connected(self, namespace: str, address: SnapshotterAddress) -> None:
        if namespace not in self._known:
            self._known.add(namespace)
            await self._save()

    async def disconnected(self, namespace: str) -> None:
        """Kept: a client dropped by the health poll or at shutdown belongs to a VM that may answer again."""

    async def forget(self, namespace: str) -> None:
        if namespace in self._known:
            self._known.discard(namespace)
            await self._save()

    async def _save(self) -> None:
        if self._memory is None:
            return
        async with self._saving:  # saves in the order of changes; each writes the whole set
            await self._memory.save(frozenset(self._known))


async def reconnect_known(cache: RemoteSnapshotterCache, known: KnownNamespaces, namespaces: Iterable[str]) -> None:
    """Dials every remembered namespace's VM again. One the resolver no longer knows (NotFound:
    the VM is gone) is forgotten; an unreachable one is kept for the next start."""
    names = sorted(namespaces)
    results = await asyncio.gather(*(cache.get(name) for name in names), return_exceptions=True)
    for name, result in zip(names, results):
        if isinstance(result, NotFoundError):
            log.info("namespace %s: no VM any more, forgetting it (%s)", name, result)
            await known.forget(name)
        elif isinstance(result, DomainError):
            log.warning("namespace %s: not reconnected after the restart: %s", name, result)
        elif isinstance(result, BaseException):  # a bug: logged, the daemon serves on
            log.error("namespace %s: reconnecting failed", name, exc_info=result)
    reached = sum(not isinstance(result, BaseException) for result in results)
    if names:
        log.info("reconnected %d of %d remembered namespaces", reached, len(names))
