"""Per-VM metrics proxies: port allocation, forwarding, release, exhaustion; service discovery."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest
from prometheus_client import CollectorRegistry

from snapmux.adapters.http.server import HttpServer
from snapmux.adapters.metrics_proxy.discovery import ServiceDiscoveryServer, label_name, render
from snapmux.adapters.metrics_proxy.port_range import PortAllocator, PortRange
from snapmux.adapters.metrics_proxy.proxy import MetricsProxies, ProxyTarget
from snapmux.adapters.prometheus.http import MetricsEndpoint
from snapmux.adapters.prometheus.registry import PrometheusMetricsRegistry
from snapmux.domain import metrics as m
from snapmux.domain.model import SnapshotterAddress
from tests.fakes.metrics import InMemoryMetricsRegistry
from tests.support.prometheus import free_port_range as free_range
from tests.support.prometheus import proxy_port

METRICS_PORT = 10001


def occupy(port: int) -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


# -- ports -------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["9000-9999", "1-1", "65535-65535", " 10-20 "])
def test_port_range_accepts(text):
    parsed = PortRange.parse(text)
    assert 1 <= parsed.first <= parsed.last <= 65535


@pytest.mark.parametrize("text", ["", "9000", "9999-9000", "0-10", "1-65536", "a-b", "-5-10", "10-"])
def test_port_range_rejects(text):
    with pytest.raises(ValueError):
        PortRange.parse(text)


def test_allocator_takes_the_first_free_port_and_reuses_released_ones():
    ports = free_range(3)
    allocator = PortAllocator(ports)
    first, second = allocator.bind(), allocator.bind()
    try:
        assert [first.getsockname()[1], second.getsockname()[1]] == [ports.first, ports.first + 1]
        first.close()
        allocator.release(ports.first)
        again = allocator.bind()
        assert again.getsockname()[1] == ports.first
        again.close()
    finally:
        first.close()
        second.close()


def test_allocator_skips_ports_other_processes_hold():
    ports = free_range(2)
    taken = occupy(ports.first)
    try:
        sock = PortAllocator(ports).bind()
        assert sock.getsockname()[1] == ports.first + 1
        sock.close()
    finally:
        taken.close()


def test_allocator_says_none_when_the_range_is_full():
    ports = free_range(1)
    allocator = PortAllocator(ports)
    sock = allocator.bind()
    try:
        assert allocator.bind() is None
        assert allocator.held == {ports.first}
    finally:
        sock.close()


# -- proxies -----------------------------------------------------------------------------------


class UnixMetricsDialer:
    """Dials the VM's metrics endpoint straight over its unix socket (the vsock handshake is
    VsockDialer's business and covered by the integration test)."""

    def __init__(self):
        self.sockets: dict[str, str] = {}

    async def open(self, address, port):
        assert port == METRICS_PORT
        return await asyncio.open_unix_connection(self.sockets[address.address])


@pytest.fixture
async def vm(tmp_path):
    """A VM's metrics endpoint: its own registry, served on a unix socket."""
    registry = CollectorRegistry()
    PrometheusMetricsRegistry(registry).observe_call("snapshots", "Prepare", "OK", 0.01)
    server = HttpServer(MetricsEndpoint(registry), access_log=False)
    path = str(tmp_path / "vm-metrics.sock")
    await server.start_unix(path)
    yield path
    await server.stop()


@pytest.fixture
async def proxies():
    dialer, metrics = UnixMetricsDialer(), InMemoryMetricsRegistry()
    manager = MetricsProxies(dialer, PortAllocator(free_range(2)), metrics, scrape_timeout=5)
    manager.dialer, manager.metrics = dialer, metrics
    yield manager
    await manager.close()


def address(path: str, metrics_port: int | None = METRICS_PORT, **labels: str) -> SnapshotterAddress:
    return SnapshotterAddress("unix", path, 10000, metrics_port, labels)


async def scrape(target: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.get(f"http://{target}/metrics")


async def test_a_connected_vm_gets_a_proxy_that_forwards_scrapes(proxies, vm):
    proxies.dialer.sockets[vm] = vm
    await proxies.connected("vm1", address(vm, vm_id="a"))
    [target] = proxies.targets()
    assert target == ProxyTarget("vm1", f"127.0.0.1:{proxy_port(proxies, 'vm1')}", {"vm_id": "a", "namespace": "vm1"})
    response = await scrape(target.target)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert 'snapmux_requests_total{code="OK",method="Prepare",service="snapshots"} 1.0' in response.text
    assert proxies.metrics.sample("snapmux_vsock_dials_total", {"purpose": "metrics"}) == 1
    assert proxies.metrics.sample("snapmux_metrics_proxies") == 1


async def test_a_vm_going_away_closes_its_proxy_and_frees_the_port(proxies, vm):
    proxies.dialer.sockets[vm] = vm
    await proxies.connected("vm1", address(vm))
    port = proxy_port(proxies, "vm1")
    await proxies.disconnected("vm1")
    assert proxies.targets() == [] and proxy_port(proxies, "vm1") is None
    with pytest.raises(httpx.ConnectError):
        await scrape(f"127.0.0.1:{port}")
    await proxies.connected("vm2", address(vm))
    assert proxy_port(proxies, "vm2") == port
    assert proxies.metrics.sample("snapmux_metrics_proxies") == 1


async def test_a_full_range_is_counted_not_raised(proxies, vm):
    proxies.dialer.sockets[vm] = vm
    for namespace in ("vm1", "vm2", "vm3"):
        await proxies.connected(namespace, address(vm))
    assert [t.namespace for t in proxies.targets()] == ["vm1", "vm2"]
    assert proxies.metrics.sample("snapmux_metrics_proxy_port_exhausted_total") == 1
    await proxies.disconnected("vm1")
    await proxies.connected("vm3", address(vm))
    assert [t.namespace for t in proxies.targets()] == ["vm2", "vm3"]


async def test_a_vm_without_metrics_port_is_not_proxied(proxies, vm):
    await proxies.connected("vm1", address(vm, metrics_port=None))
    assert proxies.targets() == []


async def test_a_reconnected_vm_keeps_one_proxy(proxies, vm):
    proxies.dialer.sockets[vm] = vm
    await proxies.connected("vm1", address(vm, generation="1"))
    await proxies.connected("vm1", address(vm, generation="2"))
    [target] = proxies.targets()
    assert target.labels["generation"] == "2"
    assert (await scrape(target.target)).status_code == 200


async def test_an_unreachable_vm_answers_502_and_counts(proxies, tmp_path):
    gone = str(tmp_path / "gone.sock")
    proxies.dialer.sockets[gone] = gone
    await proxies.connected("vm1", address(gone))
    response = await scrape(proxies.targets()[0].target)
    assert response.status_code == 502
    assert proxies.metrics.sample("snapmux_metrics_proxy_scrape_failures_total") == 1
    assert proxies.metrics.sample("snapmux_vsock_dial_failures_total", {"purpose": "metrics"}) == 1


# -- service discovery -------------------------------------------------------------------------


def test_label_names_are_made_valid_for_prometheus():
    assert [label_name(n) for n in ("namespace", "vm.id", "1st", "__meta_x", "a-b")] == [
        "namespace",
        "vm_id",
        "_1st",
        None,
        "a_b",
    ]


def test_render_lists_vms_by_namespace_then_the_demux():
    targets = [
        ProxyTarget("vm2", "127.0.0.1:9001", {"namespace": "vm2"}),
        ProxyTarget("vm1", "127.0.0.1:9000", {"vm.id": "a", "namespace": "vm1"}),
    ]
    assert render(targets, "127.0.0.1:8080") == [
        {"targets": ["127.0.0.1:9000"], "labels": {"daemon": "cvmfs-snapshotter", "vm_id": "a", "namespace": "vm1"}},
        {"targets": ["127.0.0.1:9001"], "labels": {"daemon": "cvmfs-snapshotter", "namespace": "vm2"}},
        {"targets": ["127.0.0.1:8080"], "labels": {"daemon": "demux-snapshotter"}},
    ]
    assert render([]) == []


async def test_discovery_server_answers_sd_json_and_the_demux_metrics():
    registry = CollectorRegistry()
    PrometheusMetricsRegistry(registry, declared=[m.METRICS_PROXY_PORT_EXHAUSTED])
    targets = [ProxyTarget("vm1", "127.0.0.1:9000", {"namespace": "vm1"})]
    server = ServiceDiscoveryServer(lambda: targets, MetricsEndpoint(registry), port=0)
    port = await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            sd, own, missing = await client.get("/"), await client.get("/metrics"), await client.get("/x")
    finally:
        await server.stop()
    assert sd.status_code == 200 and sd.headers["content-type"] == "application/json"
    assert sd.json() == [
        {"targets": ["127.0.0.1:9000"], "labels": {"daemon": "cvmfs-snapshotter", "namespace": "vm1"}},
        {"targets": [f"127.0.0.1:{port}"], "labels": {"daemon": "demux-snapshotter"}},
    ]
    assert "snapmux_metrics_proxy_port_exhausted_total 0.0" in own.text
    assert missing.status_code == 404
