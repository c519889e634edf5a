"""The composition root of demux-snapshotter.

    resolver (HTTP) ─┐
    connector (vsock)┴─> remotes (per-namespace client cache, listeners) ─> router ─> relay servicer
    known namespaces (JSON file) ─┘  dialled again at startup, so GC reaches them after a restart

Lifecycles are async Resources; `service.run` starts them in that order and stops
them in reverse: server first (stop accepting, let in-flight calls finish), then
the clients and their forwarding sockets, then the resolver's HTTP client.

Listeners hear about every VM client created and dropped: the cached-clients gauge and
the per-VM metrics proxies, both from `metrics_listener` (entrypoints/demux_snapshotter/metrics.py),
and the known namespaces.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence

import grpc
from dependency_injector import containers, providers
from prometheus_client import CollectorRegistry

from snapmux.adapters.grpc.health import SnapshotsHealth
from snapmux.adapters.grpc.relay_servicer import SnapshotsRelayServicer
from snapmux.adapters.grpc.server import unix_snapshots_server
from snapmux.adapters.prometheus.registry import PrometheusMetricsRegistry
from snapmux.adapters.resolver.http_client import http_address_resolver
from snapmux.adapters.state.namespace_file import JsonFileNamespaceMemory
from snapmux.adapters.vsock.connector import VsockSnapshotterConnector
from snapmux.application.metrics import MeasuredSnapshotRelay
from snapmux.application.known_namespaces import KnownNamespaces, reconnect_known
from snapmux.application.metrics_demux import MeasuredAddressResolver, MeasuredSnapshotterConnector
from snapmux.application.remote_clients import RemoteSnapshotterCache, RemoteSnapshotterListener
from snapmux.application.routing import NamespaceRouter
from snapmux.domain.ports import AddressResolver, SnapshotterConnector
from snapmux.entrypoints.demux_snapshotter.metrics import demux_metrics
from snapmux.entrypoints.lifecycle import listened
from snapmux.entrypoints.demux_snapshotter.settings import (
    CacheSettings,
    DemuxSettings,
    DialerSettings,
    ListenerSettings,
)

log = logging.getLogger(__name__)

async def vsock_connector(settings: DialerSettings) -> AsyncIterator[VsockSnapshotterConnector]:
    connector = VsockSnapshotterConnector(settings.timeout, settings.retry_interval)
    try:
        yield connector
    finally:
        await connector.close()


async def remote_snapshotters(
    resolver: AddressResolver,
    connector: SnapshotterConnector,
    listeners: Sequence[RemoteSnapshotterListener],
    settings: CacheSettings,
    known: KnownNamespaces,
) -> AsyncIterator[RemoteSnapshotterCache]:
    """The client cache; VMs reached before a restart are dialled again in the background."""
    cache = RemoteSnapshotterCache(
        resolver,
        connector,
        [*listeners, known],
        evict_on_connection_failure=settings.evict_on_connection_failure,
        poll_interval=settings.poll_connection_frequency,
    )
    await cache.start()
    reconnecting = asyncio.create_task(reconnect_known(cache, known, await known.load()), name="reconnect-known")
    try:
        yield cache
    finally:
        reconnecting.cancel()
        await asyncio.gather(reconnecting, return_exceptions=True)
        await cache.close()


def namespace_memory(path: str | None) -> JsonFileNamespaceMemory | None:
    return JsonFileNamespaceMemory(path) if path else None


async def snapshots_server(
    snapshots: SnapshotsRelayServicer, listener: ListenerSettings, health: SnapshotsHealth
) -> AsyncIterator[grpc.aio.Server]:
    """Creates the listener's folder, replaces a stale socket, sets the socket's mode and group
    before anyone can connect; on shutdown drains, then unlinks. Health (gRPC and the SD port's
    /healthz) is SERVING from listening until shutdown begins."""
    address = listener.address
    async with listened(address, unix_snapshots_server(snapshots, address, listener.access, health)) as server:
        log.info("serving containerd snapshots API on %s", address)
        await health.serving()
        try:
            yield server
        finally:
            await health.stopping()


class Container(containers.DeclarativeContainer):
    settings = providers.Dependency(instance_of=DemuxSettings)

    registry = providers.Singleton(CollectorRegistry)

    metrics = providers.Singleton(PrometheusMetricsRegistry, registry)

    # cached-clients gauge, per-VM metrics proxies and the SD server: see entrypoints/demux_snapshotter/metrics.py
    health = providers.Singleton(SnapshotsHealth)

    metrics_listener = providers.Resource(
        demux_metrics,
        settings.provided.snapshotter.metrics,
        settings.provided.snapshotter.dialer,
        registry,
        metrics,
        health,
    )

    resolver = providers.Resource(
        http_address_resolver, settings.provided.resolver.address, timeout=settings.provided.resolver.timeout
    )

    connector = providers.Resource(vsock_connector, settings.provided.snapshotter.dialer)

    known_namespaces = providers.Singleton(
        KnownNamespaces,
        providers.Callable(namespace_memory, settings.provided.known_namespaces_path),
    )

    remotes = providers.Resource(
        remote_snapshotters,
        providers.Singleton(MeasuredAddressResolver, resolver, metrics),
        providers.Singleton(MeasuredSnapshotterConnector, connector, metrics),
        metrics_listener,
        settings.provided.snapshotter.cache,
        known_namespaces,
    )

    router = providers.Singleton(
        NamespaceRouter,
        remotes,
        settings.provided.snapshotter.mount_type_prefix,
        fan_out_timeout=settings.provided.snapshotter.dialer.timeout,
    )

    # the server passes each call's bytes on (SnapshotRelay), routed and measured; no domain types
    snapshots = providers.Singleton(SnapshotsRelayServicer, providers.Singleton(MeasuredSnapshotRelay, router, metrics))

    server = providers.Resource(snapshots_server, snapshots, settings.provided.snapshotter.listener, health)
