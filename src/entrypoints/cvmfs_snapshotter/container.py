"""The composition root of cvmfs-snapshotter.

settings -> store (OverlaySnapshotter) -> snapshots (CvmfsSnapshotter: published layers are
adopted, foreign ones once a WhiteoutScanner has scanned them) -> MeasuredSnapshotService (metrics) -> server; plus the /metrics endpoint.
Resources start in that order and stop in reverse.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
from dependency_injector import containers, providers
from prometheus_client import CollectorRegistry

from snapmux.adapters.cvmfs.layers import CvmfsLayerStore
from snapmux.adapters.cvmfs.scanner import WhiteoutScanner
from snapmux.adapters.cvmfs.snapshotter import CvmfsSnapshotter
from snapmux.adapters.cvmfs.whiteouts import ShadowCache
from snapmux.adapters.grpc.health import SnapshotsHealth
from snapmux.adapters.grpc.server import unix_snapshots_server
from snapmux.adapters.overlay.mounts import MountOptions
from snapmux.adapters.overlay.reserve import RESERVED
from snapmux.adapters.overlay.snapshotter import OverlaySnapshotter
from snapmux.adapters.vsock.bridge import SocketBridge, vsock_listener
from snapmux.adapters.prometheus.http import metrics_server
from snapmux.adapters.prometheus.registry import PrometheusMetricsRegistry
from snapmux.adapters.unix_sockets import SocketAccess
from snapmux.application.metrics import MeasuredSnapshotService, SnapshotInventory
from snapmux.domain.ports import SnapshotService
from snapmux.entrypoints.cvmfs_snapshotter.settings import CvmfsSnapshotterSettings, vsock_port
from snapmux.entrypoints.lifecycle import listened, listening_on

log = logging.getLogger(__name__)

CALLER_CONTEXT = False
"""The snapshotter calls nothing on a caller's behalf and routes by nothing: the caller's namespace
and deadline are not handed to it (`DomainErrorInterceptor`), which saves their cost on every call."""

async def overlay_snapshotter(root: str) -> AsyncIterator[OverlaySnapshotter]:
    snapshotter = await OverlaySnapshotter.open(root, reserve=RESERVED)
    log.info("snapshotter root %s", snapshotter.layout.root)
    try:
        yield snapshotter
    finally:
        await snapshotter.close()


async def cvmfs_snapshotter(
    store: OverlaySnapshotter, settings: CvmfsSnapshotterSettings, metrics: PrometheusMetricsRegistry
) -> AsyncIterator[CvmfsSnapshotter]:
    """Published layers under the mountpoint are adopted, foreign ones as `foreign-layers` says
    (DUCC chains, else scanned within the budget by default), the rest unpacked locally; at startup
    each remote snapshot is looked at once (a vanished layer is logged, never fatal, never deleted)."""
    mountpoint, foreign = settings.absolute_mountpoint, settings.foreign_layers
    await asyncio.to_thread(warn_if_unusable, mountpoint)
    shadows = ShadowCache(store.layout.root, userxattr=MountOptions.detect().userxattr)
    scanner = WhiteoutScanner(shadows)
    await scanner.start()
    try:
        layers = CvmfsLayerStore(mountpoint, foreign, scanner, settings.foreign_scan_budget)
        snapshotter = CvmfsSnapshotter(store, layers, metrics=metrics)
        report = await snapshotter.restore()
        log.info("remote layers under %s: %d available, %d unavailable (foreign layers: %s, scan budget %.1fs)",
                 mountpoint, report.available, len(report.unavailable), foreign, settings.foreign_scan_budget)
        yield snapshotter
    finally:
        await scanner.close()


def warn_if_unusable(mountpoint: str) -> None:
    """A mountpoint that is missing or empty (autofs not mounted, a typo) serves no layer in place:
    the daemon still starts (every layer is then downloaded), but says so, as the Go original does."""
    try:
        empty = not os.listdir(mountpoint)
    except FileNotFoundError:
        log.warning("CVMFS mountpoint %s does not exist: every layer will be downloaded", mountpoint,
                    extra={"mountpoint": mountpoint})
        return
    except OSError as error:
        log.warning("CVMFS mountpoint %s cannot be read (%s): every layer will be downloaded", mountpoint,
                    error.strerror, extra={"mountpoint": mountpoint})
        return
    if empty:
        log.warning("CVMFS mountpoint %s is empty: every layer will be downloaded", mountpoint,
                    extra={"mountpoint": mountpoint})


@dataclass
class Listening:
    """The running gRPC server and the address it is reached on (for vsock, through the bridge
    in front of its private unix socket: `_bridged` closes it before the server stops)."""

    server: grpc.aio.Server
    address: str


@contextlib.asynccontextmanager
async def _bridged(snapshots: SnapshotService, port: int, health: SnapshotsHealth) -> AsyncIterator[Listening]:
    """The gRPC server's own socket is 0600 in a 0700 directory: only the bridge dials it."""
    private = tempfile.mkdtemp(prefix="cvmfs-snapshotter-")
    socket = os.path.join(private, "grpc.sock")
    try:
        async with contextlib.aclosing(unix_snapshots_server(snapshots, socket, health=health,
                                                             caller_context=CALLER_CONTEXT)) as serving:
            server = await anext(serving)
            bridge = SocketBridge(vsock_listener(port), socket)
            await bridge.start()
            try:
                yield Listening(server, f"vsock://{port}")
            finally:
                await bridge.close()
    finally:
        shutil.rmtree(private, ignore_errors=True)


async def listening_metrics(registry: CollectorRegistry, address: str | None, *args: Any) -> AsyncIterator[str | None]:
    async with listened(address, metrics_server(registry, address, *args)) as where:
        yield where


async def snapshots_server(
    snapshots: SnapshotService, address: str, access: SocketAccess, health: SnapshotsHealth
) -> AsyncIterator[Listening]:
    """Serves until shutdown, then lets in-flight calls finish (up to the grace period).
    A unix socket gets `access`'s mode and group before anyone can connect. The health
    service says SERVING from here (the store is open: it is a dependency) until shutdown begins."""
    port = vsock_port(address)
    async with contextlib.AsyncExitStack() as stack:
        if port is None:
            server = await stack.enter_async_context(
                listened(address, unix_snapshots_server(snapshots, address, access, health, CALLER_CONTEXT))
            )
            listening = Listening(server, address)
        else:
            with listening_on(address):
                listening = await stack.enter_async_context(_bridged(snapshots, port, health))
        log.info("serving containerd snapshots API on %s", listening.address)
        await health.serving()
        try:
            yield listening
        finally:
            await health.stopping()  # then the bridge closes, the server stops with its grace, the socket goes


class Container(containers.DeclarativeContainer):
    settings = providers.Dependency(instance_of=CvmfsSnapshotterSettings)

    store = providers.Resource(overlay_snapshotter, settings.provided.root)

    registry = providers.Singleton(CollectorRegistry)

    metrics = providers.Singleton(PrometheusMetricsRegistry, registry)

    health = providers.Singleton(SnapshotsHealth)

    snapshots = providers.Resource(cvmfs_snapshotter, store, settings, metrics)

    server = providers.Resource(
        snapshots_server,
        providers.Singleton(MeasuredSnapshotService, snapshots, metrics),
        settings.provided.listen_address.call(),
        settings.provided.socket_access.call(),
        health,
    )

    # /metrics (off on the host by default, vsock://10001 in a VM); snapshots by kind and usage sampled per scrape
    metrics_endpoint = providers.Resource(
        listening_metrics,
        registry,
        settings.provided.metrics_listen_address.call(),
        providers.List(providers.Singleton(SnapshotInventory, snapshots, metrics).provided.sample),
        "cvmfs-snapshotter-metrics",
        settings.provided.socket_access.call(),
    )
