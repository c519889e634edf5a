"""A real Prometheus scrapes two VMs' snapshotters through the demux's per-VM metrics proxies.

The stack, all real but the VMs' machines: containerd 1.6 with the demux as its
proxy snapshotter; the demux (router, client cache, vsock connector, metrics
proxies, service discovery) in this process; two "VMs", each a Firecracker
hybrid-vsock stand-in in front of a measured snapshotter (gRPC on port 10000)
and its metrics endpoint (port 10001); Prometheus discovering targets from the
demux's SD endpoint. The same with the real daemons: test_metrics_prometheus_daemons.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from snapmux.adapters.grpc.relay_servicer import SnapshotsRelayServicer
from snapmux.adapters.grpc.server import start_unix_snapshots_server
from snapmux.adapters.metrics_proxy.discovery import ServiceDiscoveryServer
from snapmux.adapters.metrics_proxy.port_range import PortAllocator
from snapmux.adapters.metrics_proxy.proxy import MetricsProxies, VsockMetricsDialer
from snapmux.adapters.prometheus.http import MetricsEndpoint
from snapmux.adapters.prometheus.registry import PrometheusMetricsRegistry
from snapmux.adapters.vsock.connector import VsockSnapshotterConnector
from snapmux.application.metrics import MeasuredSnapshotRelay
from snapmux.application.metrics_demux import MeasuredAddressResolver, MeasuredSnapshotterConnector, RemoteClientsGauge
from snapmux.application.remote_clients import RemoteSnapshotterCache
from snapmux.application.routing import NamespaceRouter
from snapmux.domain.model import SnapshotterAddress
from tests.fakes.resolver import InMemoryAddressResolver
from tests.integration.conftest import require_binaries
from tests.support.metrics_vms import (
    METRICS_PORT,
    NAMESPACES,
    SNAPSHOTTER_PORT,
    Vm,
    by_namespace,
    ctr_prepare,
    port_is_free,
    running_containerd,
    start_vm,
)
from tests.support.prometheus import free_port_range, proxy_port, require_prometheus, running_prometheus

pytestmark = pytest.mark.integration


@dataclass
class Demux:
    socket: str
    resolver: InMemoryAddressResolver
    cache: RemoteSnapshotterCache
    proxies: MetricsProxies
    sd_url: str


@contextlib.asynccontextmanager
async def running_demux(folder: Path, vms: dict[str, Vm]):
    registry = CollectorRegistry()
    metrics = PrometheusMetricsRegistry(registry)
    resolver = InMemoryAddressResolver(
        {
            ns: SnapshotterAddress("unix", vm.vsock.uds_path, SNAPSHOTTER_PORT, METRICS_PORT, {"namespace": ns, "vm_id": f"id-{ns}"})
            for ns, vm in vms.items()
        }
    )
    proxies = MetricsProxies(VsockMetricsDialer(timeout=2.0), PortAllocator(free_port_range(4)), metrics, scrape_timeout=2.0)
    cache = RemoteSnapshotterCache(
        MeasuredAddressResolver(resolver, metrics),
        MeasuredSnapshotterConnector(VsockSnapshotterConnector(timeout=2.0), metrics),
        [proxies, RemoteClientsGauge(metrics)],
        poll_interval=0,  # the test evicts by polling explicitly
    )
    path = str(folder / "demux.sock")
    relay = MeasuredSnapshotRelay(NamespaceRouter(cache), metrics)  # as the daemon composes it
    server = await start_unix_snapshots_server(SnapshotsRelayServicer(relay), path)
    sd = ServiceDiscoveryServer(proxies.targets, MetricsEndpoint(registry), port=0)
    sd_port = await sd.start()
    try:
        yield Demux(path, resolver, cache, proxies, f"http://127.0.0.1:{sd_port}/")
    finally:
        await cache.close()
        await proxies.close()
        await sd.stop()
        await server.stop(None)


@pytest.fixture
async def stack():
    require_prometheus()
    require_binaries("containerd", "ctr")
    folder = Path(tempfile.mkdtemp(prefix="smx-m-", dir="/tmp"))  # unix socket paths must stay short
    vms = {ns: await start_vm(folder, ns) for ns in NAMESPACES}
    try:
        async with running_demux(folder, vms) as demux:
            async with running_containerd(folder / "ctrd", demux.socket) as containerd:
                async with running_prometheus(folder / "prometheus", demux.sd_url) as prometheus:
                    yield vms, demux, containerd, prometheus
    finally:
        for vm in vms.values():
            await vm.stop()
        shutil.rmtree(folder, ignore_errors=True)


async def evict(cache: RemoteSnapshotterCache, namespace: str, timeout: float = 30.0) -> None:
    """The health poll, run until it notices the stopped VM (its channel may look READY briefly)."""
    deadline = time.monotonic() + timeout
    while namespace not in await cache.poll_once():
        assert time.monotonic() < deadline, f"{namespace} was never evicted"
        assert namespace in {entry.namespace for entry in cache.cached()}, f"{namespace} left the cache unannounced"
        await asyncio.sleep(0.1)


async def test_prometheus_scrapes_each_vm_through_its_proxy_then_forgets_a_stopped_vm(stack):
    vms, demux, containerd, prometheus = stack
    for namespace in NAMESPACES:  # work through containerd: its first call connects the VM
        await ctr_prepare(containerd, namespace, f"work-{namespace}")
    await ctr_prepare(containerd, "vm1", "more-work")

    async def both_up():
        targets = by_namespace(await prometheus.active_targets())
        return targets if set(targets) == set(NAMESPACES) and all(t["health"] == "up" for t in targets.values()) else None

    targets = await prometheus.wait_for(both_up, "both VM targets up")
    assert {ns: t["labels"]["vm_id"] for ns, t in targets.items()} == {"vm1": "id-vm1", "vm2": "id-vm2"}
    assert {t["labels"]["instance"] for t in targets.values()} == {
        f"127.0.0.1:{proxy_port(demux.proxies, ns)}" for ns in NAMESPACES
    }

    async def prepares():
        result = await prometheus.query('snapmux_requests_total{service="snapshots",method="Prepare",code="OK"}')
        counts = {r["metric"]["namespace"]: float(r["value"][1]) for r in result if "namespace" in r["metric"]}
        return counts if counts == {"vm1": 2.0, "vm2": 1.0} else None

    assert await prometheus.wait_for(prepares, "each VM's Prepare counter") == {"vm1": 2.0, "vm2": 1.0}

    async def demux_counts():  # the demux's own /metrics on the SD port is a target too
        result = await prometheus.query('sum(snapmux_requests_total{daemon="demux-snapshotter",method="Prepare"})')
        return result and float(result[0]["value"][1]) == 3.0

    assert await prometheus.wait_for(demux_counts, "the demux's own Prepare counter")

    # vm1 stops: the resolver forgets it, the health poll evicts its client, its proxy closes.
    port = proxy_port(demux.proxies, "vm1")
    demux.resolver.addresses.pop("vm1")
    await vms["vm1"].vsock.stop()
    await evict(demux.cache, "vm1")
    assert proxy_port(demux.proxies, "vm1") is None and port_is_free(port)

    async def only_vm2_up():
        targets = by_namespace(await prometheus.active_targets())
        return set(targets) == {"vm2"} and targets["vm2"]["health"] == "up" and targets["vm2"]["lastError"] == ""

    assert await prometheus.wait_for(only_vm2_up, "vm1 gone from discovery, vm2 still up")
    await ctr_prepare(containerd, "vm2", "after")

    async def vm2_counts():
        result = await prometheus.query('snapmux_requests_total{namespace="vm2",method="Prepare",code="OK"}')
        return result and float(result[0]["value"][1]) == 2.0

    assert await prometheus.wait_for(vm2_counts, "vm2 still scraped after vm1 left")
