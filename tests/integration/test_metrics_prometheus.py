"""A real Prometheus scrapes two VMs' snapshotters through the demux's per-VM metrics proxies.

The stack, all real but the VMs' machines: containerd 1.6 with the demux as its
proxy snapshotter; the demux (router, client cache, vsock connector, metrics
proxies, service discovery) in this process; two "VMs", each a Firecracker
hybrid-vsock stand-in in front of a measured snapshotter (gRPC on port 10000)
and its metrics endpoint (port 10001); Prometheus discovering targets from the
demux's SD endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from snapmux.adapters.grpc.server import start_unix_snapshots_server
from snapmux.adapters.http.server import HttpServer
from snapmux.adapters.metrics_proxy.discovery import ServiceDiscoveryServer
from snapmux.adapters.metrics_proxy.port_range import PortAllocator
from snapmux.adapters.metrics_proxy.proxy import MetricsProxies, VsockMetricsDialer
from snapmux.adapters.prometheus.http import MetricsEndpoint
from snapmux.adapters.prometheus.registry import PrometheusMetricsRegistry
from snapmux.adapters.vsock.connector import VsockSnapshotterConnector
from snapmux.application.metrics import MeasuredSnapshotService, SnapshotInventory
from snapmux.application.metrics_demux import MeasuredAddressResolver, MeasuredSnapshotterConnector, RemoteClientsGauge
from snapmux.application.remote_clients import RemoteSnapshotterCache
from snapmux.application.routing import NamespaceRouter
from snapmux.domain.model import SnapshotterAddress
from tests.fakes.resolver import InMemoryAddressResolver
from tests.fakes.snapshots import InMemorySnapshotService
from tests.integration.conftest import require_binaries
from tests.support.containerd import Containerd, Daemon
from tests.support.firecracker_vsock import FirecrackerVsockStandIn
from tests.support.prometheus import free_port, free_port_range, proxy_port, require_prometheus, running_prometheus
from tests.support.resolver import running_resolver

pytestmark = pytest.mark.integration

SNAPSHOTTER_PORT, METRICS_PORT = 10000, 10001
NAMESPACES = ("vm1", "vm2")


@dataclass
class Vm:
    namespace: str
    vsock: FirecrackerVsockStandIn
    grpc: object
    metrics: HttpServer

    async def stop(self) -> None:
        await self.vsock.stop()
        await self.metrics.stop(grace=1.0)
        await self.grpc.stop(None)


async def start_vm(folder: Path, namespace: str) -> Vm:
    """A VM's agent side: a measured snapshotter and its metrics, behind a hybrid vsock socket."""
    registry = CollectorRegistry()
    metrics = PrometheusMetricsRegistry(registry)
    inner = InMemorySnapshotService()
    grpc_path, metrics_path = str(folder / f"{namespace}-grpc.sock"), str(folder / f"{namespace}-metrics.sock")
    grpc_server = await start_unix_snapshots_server(MeasuredSnapshotService(inner, metrics), grpc_path)
    http = HttpServer(MetricsEndpoint(registry, [SnapshotInventory(inner, metrics).sample]), access_log=False)
    await http.start_unix(metrics_path)
    vsock = FirecrackerVsockStandIn(str(folder / f"{namespace}.vsock"), {SNAPSHOTTER_PORT: grpc_path})
    vsock.listen(METRICS_PORT, metrics_path)
    await vsock.start()
    return Vm(namespace, vsock, grpc_server, http)


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
    server = await start_unix_snapshots_server(MeasuredSnapshotService(NamespaceRouter(cache), metrics), path)
    sd = ServiceDiscoveryServer(proxies.targets, MetricsEndpoint(registry), port=0)
    sd_port = await sd.start()
    try:
        yield Demux(path, resolver, cache, proxies, f"http://127.0.0.1:{sd_port}/")
    finally:
        await cache.close()
        await proxies.close()
        await sd.stop()
        await server.stop(None)


@contextlib.asynccontextmanager
async def running_containerd(folder: Path, demux_socket: str):
    """containerd's helpers block; run them off the loop the in-process demux serves on."""
    context = Containerd.start(folder, proxy_snapshotters={"demux": demux_socket})
    containerd = await asyncio.to_thread(context.__enter__)
    try:
        yield containerd
    finally:
        await asyncio.to_thread(context.__exit__, None, None, None)


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


async def ctr_prepare(containerd: Containerd, namespace: str, key: str) -> None:
    await asyncio.to_thread(containerd.ctr, "snapshots", "--snapshotter", "demux", "prepare", key, namespace=namespace)


def by_namespace(targets: list[dict]) -> dict[str, dict]:
    return {t["labels"]["namespace"]: t for t in targets if "namespace" in t["labels"]}


async def evict(cache: RemoteSnapshotterCache, namespace: str, timeout: float = 30.0) -> None:
    """The health poll, run until it notices the stopped VM (its channel may look READY briefly)."""
    deadline = time.monotonic() + timeout
    while namespace not in await cache.poll_once():
        assert time.monotonic() < deadline, f"{namespace} was never evicted"
        assert namespace in {entry.namespace for entry in cache.cached()}, f"{namespace} left the cache unannounced"
        await asyncio.sleep(0.1)


def port_is_free(port: int) -> bool:
    """Another server could listen there now (SO_REUSEADDR: the scrapes' TIME_WAIT remains)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen()
        except OSError:
            return False
        return True


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


# -- the same, with the real daemons: demux-snapshotter and http-address-resolver ---------------


def demux_config(folder: Path, resolver_url: str, ports: str, sd_port: int) -> Path:
    config = folder / "demux.toml"
    config.write_text(
        f"""
[snapshotter.listener]
address = "{folder / 'demux.sock'}"
[snapshotter.proxy.address.resolver]
type = "http"
address = "{resolver_url}"
[snapshotter.dialer]
timeout = "2s"
[snapshotter.cache]
poll_connection_frequency = "500ms"
[snapshotter.metrics]
enable = true
port_range = "{ports}"
[snapshotter.metrics.service_discovery]
enable = true
port = {sd_port}
"""
    )
    return config


def sd_answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@contextlib.asynccontextmanager
async def running_demux_daemon(folder: Path, resolver_url: str):
    sd_port = free_port()
    config = demux_config(folder, resolver_url, str(free_port_range(4)), sd_port)
    script = shutil.which("demux-snapshotter")
    argv = [script] if script else [sys.executable, "-m", "snapmux.entrypoints.demux_snapshotter.main"]
    daemon = Daemon([*argv, "--config", str(config), "--log-level", "debug"], folder / "demux.log")
    sd_url = f"http://127.0.0.1:{sd_port}/"
    await asyncio.to_thread(daemon.start, lambda: os.path.exists(folder / "demux.sock") and sd_answers(sd_url))
    try:
        yield str(folder / "demux.sock"), sd_url, daemon
    finally:
        code = await asyncio.to_thread(daemon.stop)
    assert code == 0, daemon.log()  # a clean shutdown, proxies and SD server included


def address_map(vms: dict[str, Vm]) -> dict:
    return {
        ns: {"network": "unix", "address": vm.vsock.uds_path, "snapshotter_port": SNAPSHOTTER_PORT,
             "metrics_port": METRICS_PORT, "labels": {"vm_id": f"id-{ns}"}}
        for ns, vm in vms.items()
    }


async def test_real_daemons_vm_targets_come_and_go_in_prometheus():
    require_prometheus()
    require_binaries("containerd", "ctr")
    folder = Path(tempfile.mkdtemp(prefix="smx-d-", dir="/tmp"))
    vms = {ns: await start_vm(folder, ns) for ns in NAMESPACES}
    map_path = folder / "resolver" / "addresses.json"
    try:
        with running_resolver(folder / "resolver", static=address_map(vms)) as resolver:
            async with running_demux_daemon(folder, resolver.url) as (demux_socket, sd_url, demux):
                async with running_containerd(folder / "ctrd", demux_socket) as containerd:
                    async with running_prometheus(folder / "prometheus", sd_url) as prometheus:
                        await exercise(vms, containerd, prometheus, sd_url, map_path, demux)
    finally:
        for vm in vms.values():
            await vm.stop()
        shutil.rmtree(folder, ignore_errors=True)


async def exercise(vms, containerd, prometheus, sd_url, map_path, demux) -> None:
    for namespace in NAMESPACES:
        await ctr_prepare(containerd, namespace, f"work-{namespace}")

    async def both_counted():
        result = await prometheus.query('snapmux_requests_total{method="Prepare",code="OK",daemon="cvmfs-snapshotter"}')
        counts = {r["metric"]["namespace"]: float(r["value"][1]) for r in result}
        return counts == {"vm1": 1.0, "vm2": 1.0}

    assert await prometheus.wait_for(both_counted, "each VM's Prepare counter"), demux.log()
    targets = by_namespace(await prometheus.active_targets())
    assert {ns: t["labels"]["vm_id"] for ns, t in targets.items()} == {"vm1": "id-vm1", "vm2": "id-vm2"}
    vm1_target = targets["vm1"]["labels"]["instance"]

    # vm1 stops: the resolver forgets it, the demux's health poll evicts it, its proxy closes.
    map_path.write_text(json.dumps(address_map({"vm2": vms["vm2"]})))
    await vms["vm1"].vsock.stop()

    async def only_vm2_up():
        targets = by_namespace(await prometheus.active_targets())
        return set(targets) == {"vm2"} and targets["vm2"]["health"] == "up"

    assert await prometheus.wait_for(only_vm2_up, "vm1 gone, vm2 up"), demux.log()
    listed = [group["targets"][0] for group in httpx.get(sd_url, timeout=5).json()]
    assert vm1_target not in listed
    host, port = vm1_target.rsplit(":", 1)
    assert port_is_free(int(port))

    async def one_client_cached():
        result = await prometheus.query('snapmux_remote_clients{daemon="demux-snapshotter"}')
        return result and float(result[0]["value"][1]) == 1.0

    assert await prometheus.wait_for(one_client_cached, "the demux's cached-clients gauge at 1")
