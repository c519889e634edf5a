"""One client per namespace's remote snapshotter, cached, single-flight, health-polled.

Why this shape: the Go original dialled under a global lock (one dead VM stalled
every namespace), raced on first use (two clients, one leaked) and never closed
connections (firecracker-containerd#651). Here each namespace has at most one dial
in flight, shared by every concurrent caller; nothing is cached from a failure;
every client that leaves the cache is closed and announced to the listeners.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from snapmux.domain.errors import UnavailableError
from snapmux.domain.model import SnapshotterAddress
from snapmux.domain.ports import AddressResolver, RemoteSnapshotter, SnapshotterConnector

log = logging.getLogger(__name__)


class RemoteSnapshotterListener(Protocol):
    """Told when a VM's client enters and leaves the cache (e.g. a per-VM metrics proxy).

    Called on the event loop, after the cache changed; a listener that raises is
    logged and ignored so it can never break snapshot calls.
    """

    async def connected(self, namespace: str, address: SnapshotterAddress) -> None: ...

    async def disconnected(self, namespace: str) -> None: ...


@dataclass(frozen=True)
class CachedRemote:
    namespace: str
    address: SnapshotterAddress
    client: RemoteSnapshotter


class RemoteSnapshotterCache:
    def __init__(
        self,
        resolver: AddressResolver,
        connector: SnapshotterConnector,
        listeners: Sequence[RemoteSnapshotterListener] = (),
        *,
        evict_on_connection_failure: bool = True,
        poll_interval: float = 60.0,
    ) -> None:
        self._resolver = resolver
        self._connector = connector
        self._listeners = list(listeners)
        self._evict_on_failure = evict_on_connection_failure
        self._poll_interval = poll_interval
        self._entries: dict[str, CachedRemote] = {}
        self._dials: dict[str, asyncio.Task[CachedRemote]] = {}
        self._poller: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False
        # listeners hear one namespace's events in order (disconnected(old) before connected(new)),
        # held only while notifying: never across a dial
        self._announcing: dict[str, asyncio.Lock] = {}

    async def start(self) -> None:
        """Start the health poll, when eviction on connection failure is enabled."""
        if self._evict_on_failure and self._poll_interval > 0 and self._poller is None:
            self._poller = asyncio.create_task(self._poll_forever(), name="remote-snapshotter-health-poll")

    def connected(self, namespace: str) -> RemoteSnapshotter | None:
        """The namespace's client if one is cached: every call's lookup, with no coroutine to build."""
        entry = self._entries.get(namespace)
        return entry.client if entry is not None else None

    async def get(self, namespace: str) -> RemoteSnapshotter:
        """The namespace's client; concurrent first calls share one resolve+dial."""
        entry = self._entries.get(namespace)
        if entry is not None:
            return entry.client
        if self._closed:
            raise UnavailableError("demux-snapshotter is shutting down")
        dial = self._dials.get(namespace)
        if dial is None:
            # a fresh context: the dial is shared, so no single caller's deadline may bound it
            dial = asyncio.create_task(self._open(namespace), name=f"dial-{namespace}", context=contextvars.Context())
            self._dials[namespace] = dial
            dial.add_done_callback(lambda _t: self._forget_dial(namespace, dial))
        # shield: one impatient caller going away must not abort the dial the others wait on
        try:
            return (await asyncio.shield(dial)).client
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if dial.cancelled() and task is not None and not task.cancelling():
                raise UnavailableError("demux-snapshotter is shutting down") from None  # close() abandoned it
            raise

    async def _reach(self, namespace: str) -> tuple[SnapshotterAddress, RemoteSnapshotter]:
        """Resolve, then dial; a failure of either is the operator's first clue, so it is logged
        with the namespace (the caller only sees UNAVAILABLE)."""
        try:
            address = await self._resolver.resolve(namespace)
        except Exception as error:
            log.warning("resolving the snapshotter of namespace %s failed: %s", namespace, error,
                        extra={"namespace": namespace})
            raise
        try:
            return address, await self._connector.connect(namespace, address)
        except Exception as error:
            log.warning("dialling the snapshotter of namespace %s at %s failed: %s", namespace, _where(address), error,
                        extra={"namespace": namespace, "address": _where(address)})
            raise

    async def _open(self, namespace: str) -> CachedRemote:
        address, client = await self._reach(namespace)
        entry = CachedRemote(namespace, address, client)
        if self._closed:
            await client.close()
            raise UnavailableError("demux-snapshotter is shutting down")
        self._entries[namespace] = entry
        # from here the entry answers: a caller after its eviction (even during the announcement
        # below) must dial anew, not be handed this finished dial's client
        self._forget_dial(namespace)
        log.info("connected to the snapshotter of namespace %s at %s", namespace, _where(address))
        async with self._announcing.setdefault(namespace, asyncio.Lock()):
            for listener in self._listeners:
                await _notify(listener.connected(namespace, address), "connected", namespace)
        return entry

    def _forget_dial(self, namespace: str, dial: asyncio.Task[CachedRemote] | None = None) -> None:
        """Drop the namespace's dial in flight: `dial` only if still that one, else the current task's."""
        mine = dial if dial is not None else asyncio.current_task()
        if self._dials.get(namespace) is mine:
            del self._dials[namespace]

    def cached(self) -> list[CachedRemote]:
        """Every remote currently connected (what fan-out calls such as GC's walk reach)."""
        return list(self._entries.values())

    async def discard(self, namespace: str, client: RemoteSnapshotter) -> None:
        """Drop `client` after a transport failure, unless it was already replaced."""
        entry = self._entries.get(namespace)
        if entry is not None and entry.client is client:
            await self._evict(entry, "transport failure")

    async def poll_once(self) -> list[str]:
        """Probe every cached client concurrently; evict the unhealthy. Returns the evicted."""
        entries = self.cached()
        results = await asyncio.gather(*(e.client.healthy() for e in entries), return_exceptions=True)
        evicted = []
        for entry, healthy in zip(entries, results):
            if healthy is not True and self._entries.get(entry.namespace) is entry:
                await self._evict(entry, f"health check failed ({healthy!r})")
                evicted.append(entry.namespace)
        return evicted

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self._poll_interval)
            try:
                await self.poll_once()
            except Exception:  # noqa: BLE001 - the poll must outlive one bad round
                log.exception("health poll of remote snapshotters failed")

    async def _evict(self, entry: CachedRemote, why: str) -> None:
        del self._entries[entry.namespace]
        level = logging.INFO if why == "shutdown" else logging.WARNING
        log.log(level, "dropping the snapshotter client of namespace %s: %s", entry.namespace, why)
        async with self._announcing.setdefault(entry.namespace, asyncio.Lock()):
            for listener in self._listeners:
                await _notify(listener.disconnected(entry.namespace), "disconnected", entry.namespace)
        # close in the background so the caller that saw the failure is not held up
        task = asyncio.create_task(_close(entry), name=f"close-{entry.namespace}")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """Stop polling, abandon dials in flight, close and announce every client."""
        self._closed = True
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
        for dial in list(self._dials.values()):
            dial.cancel()
        await asyncio.gather(*self._dials.values(), return_exceptions=True)
        for entry in self.cached():
            await self._evict(entry, "shutdown")
        await asyncio.gather(*self._closing, return_exceptions=True)


async def _close(entry: CachedRemote) -> None:
    try:
        await entry.client.close()
    except Exception:  # noqa: BLE001 - closing must not fail eviction
        log.exception("closing the snapshotter client of namespace %s failed", entry.namespace)


async def _notify(call, what: str, namespace: str) -> None:  # type: ignore[no-untyped-def]
    try:
        await call
    except Exception:  # noqa: BLE001 - listeners never break snapshot calls
        log.exception("listener failed on %s(%s)", what, namespace)


def _where(address: SnapshotterAddress) -> str:
    port = f" port {address.snapshotter_port}" if address.snapshotter_port else ""
    return f"{address.network}:{address.address}{port}"
