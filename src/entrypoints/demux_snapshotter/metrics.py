"""The demux's metrics: its own registry, per-VM metrics proxies and Prometheus service discovery.

One Resource, `demux_metrics`, yields the client-cache listeners: the cached-clients
gauge and (with `[snapshotter.metrics] enable`) the per-VM proxies;
with `[snapshotter.metrics.service_discovery] enable` it also serves the SD
document at `http://<host>:<port>/` and the demux's own metrics at `/metrics`
on that port (listed in the SD document as one more target).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from prometheus_client import CollectorRegistry

from snapmux.adapters.metrics_proxy.discovery import ServiceDiscoveryServer
from snapmux.adapters.metrics_proxy.port_range import PortAllocator, PortRange
from snapmux.adapters.metrics_proxy.proxy import MetricsProxies, VsockMetricsDialer
from snapmux.adapters.prometheus.http import MetricsEndpoint
from snapmux.application.metrics_demux import RemoteClientsGauge
from snapmux.application.remote_clients import RemoteSnapshotterListener
from snapmux.domain import metrics as m
from snapmux.domain.ports import HealthCheck
from snapmux.entrypoints.lifecycle import listening_on
from snapmux.entrypoints.demux_snapshotter.settings import DialerSettings, MetricsSettings

log = logging.getLogger(__name__)


async def demux_metrics(
    settings: MetricsSettings,
    dialer: DialerSettings,
    registry: CollectorRegistry,
    metrics: m.MetricsRegistry,
    health: HealthCheck | None = None,
) -> AsyncIterator[list[RemoteSnapshotterListener]]:
    listeners: list[RemoteSnapshotterListener] = [RemoteClientsGauge(metrics)]
    proxies = None
    if settings.enable:
        allocator = PortAllocator(PortRange(*settings.ports), settings.host)
        proxies = MetricsProxies(VsockMetricsDialer(dialer.timeout), allocator, metrics)
        listeners.append(proxies)
        log.info("per-VM metrics proxies on %s ports %s", settings.host, settings.port_range)
    discovery = None
    if settings.service_discovery.enable:
        targets = proxies.targets if proxies is not None else list
        discovery = ServiceDiscoveryServer(
            targets, MetricsEndpoint(registry), host=settings.host, port=settings.service_discovery.port, health=health
        )
        with listening_on(f"{settings.host}:{settings.service_discovery.port}"):
            port = await discovery.start()
        log.info("Prometheus service discovery on http://%s:%d/ (demux metrics at /metrics, health at /healthz)",
                 settings.host, port)
    try:
        yield listeners
    finally:
        if discovery is not None:
            await discovery.stop()
        if proxies is not None:
            await proxies.close()
