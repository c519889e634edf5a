"""The composition root of cvmfs-snapshotter.

settings -> store (OverlaySnapshotter) -> snapshots (CvmfsSnapshotter: published layers are
adopted, foreign ones once a WhiteoutScanner has scanned them) -> MeasuredSnapshotService (metrics) -> server; plus the /metrics endpoint.
Resources start in that order and stop in reverse.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
from dependency_injector import containers, providers
from prometheus_client import CollectorRegistry

from snapmux.adapters.cvmfs.layers import CvmfsLayerStore
from snapmux.adapters.cvmfs.scanner import WhiteoutScanner
from snapmux.adapters.cvmfs.snapshotter import CvmfsSnapshotter
from snapmux.adapters.cvmfs.whiteouts import ShadowCache
from snapmux.adapters.grpc.health import SnapshotsHealth
from snapmux.adapters.grpc.server import start_unix_snapshots_server
from snapmux.adapters.local.mounts import MountOptions
from snapmux.adapters.local.snapshotter import OverlaySnapshotter
from snapmux.adapters.vsock.bridge import SocketBridge, vsock_listener
from snapmux.adapters.prometheus.http import metrics_server
from snapmux.adapters.prometheus.registry import PrometheusMetricsRegistry
from snapmux.adapters.unix_sockets import SocketAccess
from snapmux.application.metrics import MeasuredSnapshotService, SnapshotInventory
from snapmux.domain.ports import SnapshotService
from snapmux.entrypoints.cvmfs_snapshotter.settings import CvmfsSnapshotterSettings, vsock_port

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_SECONDS = 30.0
"""In-flight calls get this long to finish on SIGTERM before they are cancelled."""


async def overlay_snapshotter(root: str) -> AsyncIterator[OverlaySnapshotter]:
    snapshotter = await OverlaySnapshotter.open(root)
    log.info("snapshotter root %s", snapshotter.layout.root)
    try:
        yield snapshotter
    finally:
        await snapshotter.close()


async def cvmfs_snapshotter(
    store: OverlaySnapshotter, mountpoint: str, foreign: str
) -> AsyncIterator[CvmfsSnapshotter]:
    """Published layers under `mountpoint` are adopted, foreign ones as `foreign` says (scanned for
    whiteouts in the background by default), the rest unpacked locally; at startup each remote
    snapshot is looked at once (a vanished layer is logged, never fatal, never deleted)."""
    shadows = ShadowCache(store.layout.root, userxattr=MountOptions.detect().userxattr)
    scanner = WhiteoutScanner(shadows)
    await scanner.start()
    try:
        snapshotter = CvmfsSnapshotter(store, CvmfsLayerStore(mountpoint, foreign, scanner))
        report = await snapshotter.restore()
        log.info("remote layers under %s: %d available, %d unavailable (foreign layers: %s)", mountpoint,
                 report.available, len(report.unavailable), foreign)
        yield snapshotter
    finally:
        await scanner.close()


@dataclass
class Listening:
    """The running gRPC server and, for vsock, the bridge in front of its private unix socket."""

    server: grpc.aio.Server
    address: str
    bridge: SocketBridge | None = None


@contextlib.asynccontextmanager
async def _bridged(snapshots: SnapshotService, port: int, health: SnapshotsHealth) -> AsyncIterator[Listening]:
    """The gRPC server's own socket is 0600 in a 0700 directory: only the bridge dials it."""
    private = tempfile.mkdtemp(prefix="cvmfs-snapshotter-")
    try:
        server = await start_unix_snapshots_server(snapshots, os.path.join(private, "grpc.sock"), health=health)
        bridge = SocketBridge(vsock_listener(port), os.path.join(private, "grpc.sock"))
        await bridge.start()
        yield Listening(server, f"vsock://{port}", bridge)
    finally:
        shutil.rmtree(private, ignore_errors=True)


async def snapshots_server(
    snapshots: SnapshotService, address: str, access: SocketAccess, health: SnapshotsHealth
) -> AsyncIterator[Listening]:
    """Serves until shutdown, then lets in-flight calls finish (up to the grace period).
    A unix socket gets `access`'s mode and group before anyone can connect. The health
    service says SERVING from here (the store is open: it is a dependency) until shutdown begins."""
    port = vsock_port(address)
    async with contextlib.AsyncExitStack() as stack:
        if port is None:
            server = await start_unix_snapshots_server(snapshots, address, access=access, health=health)
            listening = Listening(server, address)
        else:
            listening = await stack.enter_async_context(_bridged(snapshots, port, health))
        log.info("serving containerd snapshots API on %s", listening.address)
        await health.serving()
        try:
            yield listening
        finally:
            await health.stopping()
            if listening.bridge is not None:
                await listening.bridge.close()
            await listening.server.stop(SHUTDOWN_GRACE_SECONDS)
            if port is None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(address)


class Container(containers.DeclarativeContainer):
    settings = providers.Dependency(instance_of=CvmfsSnapshotterSettings)

    store = providers.Resource(overlay_snapshotter, settings.provided.root)

    snapshots = providers.Resource(
        cvmfs_snapshotter, store, settings.provided.absolute_mountpoint, settings.provided.foreign_layers
    )

    registry = providers.Singleton(CollectorRegistry)

    metrics = providers.Singleton(PrometheusMetricsRegistry, registry)

    health = providers.Singleton(SnapshotsHealth)

    server = providers.Resource(
        snapshots_server,
        providers.Singleton(MeasuredSnapshotService, snapshots, metrics),
        settings.provided.listen_address.call(),
        settings.provided.socket_access.call(),
        health,
    )

    # /metrics (off on the host by default, vsock://10001 in a VM); snapshots by kind and usage sampled per scrape
    metrics_endpoint = providers.Resource(
        metrics_server,
        registry,
        settings.provided.metrics_listen_address.call(),
        providers.List(providers.Singleton(SnapshotInventory, snapshots, metrics).provided.sample),
        "cvmfs-snapshotter-metrics",
        settings.provided.socket_access.call(),
    )
