"""Each measuring decorator moves its metrics, on the fake and on a real CollectorRegistry."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from snapmux.adapters.prometheus.registry import PrometheusMetricsRegistry
from snapmux.application.metrics import MeasuredSnapshotService, SnapshotInventory, code_of
from snapmux.application.metrics_demux import MeasuredAddressResolver, MeasuredSnapshotterConnector, RemoteClientsGauge
from snapmux.domain import errors as e
from snapmux.domain.labels import REF_LABEL
from snapmux.domain.model import SnapshotterAddress, Usage
from tests.fakes.metrics import InMemoryMetricsRegistry
from tests.fakes.resolver import InMemoryAddressResolver
from tests.fakes.snapshots import InMemorySnapshotService

ADDRESS = SnapshotterAddress("unix", "/run/vm1.vsock", 10000, 10001, {"namespace": "vm1"})


@pytest.fixture
def metrics():
    return InMemoryMetricsRegistry()


def calls(metrics, method, code="OK", service="snapshots"):
    return metrics.sample("snapmux_requests_total", {"service": service, "method": method, "code": code}) or 0


async def test_every_call_is_counted_and_timed_by_method(metrics):
    snapshots = MeasuredSnapshotService(InMemorySnapshotService(), metrics)
    await snapshots.prepare("ns/1/a")
    await snapshots.commit("ns/1/b", "ns/1/a")
    await snapshots.view("ns/1/v", "ns/1/b")
    await snapshots.stat("ns/1/b")
    await snapshots.mounts("ns/1/v")
    await snapshots.usage("ns/1/b")
    assert [info.name async for info in snapshots.walk()]
    await snapshots.remove("ns/1/v")
    for method in ("Prepare", "Commit", "View", "Stat", "Mounts", "Usage", "List", "Remove"):
        assert calls(metrics, method) == 1, method
        assert metrics.sample("snapmux_request_duration_seconds_count", {"service": "snapshots", "method": method}) == 1


async def test_errors_are_counted_by_status_code_and_still_raised(metrics):
    snapshots = MeasuredSnapshotService(InMemorySnapshotService(), metrics)
    with pytest.raises(e.NotFoundError):
        await snapshots.stat("missing")
    await snapshots.prepare("a")
    with pytest.raises(e.AlreadyExistsError):
        await snapshots.prepare("a")
    labels = {"service": "snapshots", "method": "Stat", "code": "NOT_FOUND"}
    assert metrics.sample("snapmux_request_errors_total", labels) == 1
    assert calls(metrics, "Prepare", "ALREADY_EXISTS") == 1
    assert calls(metrics, "Prepare", "OK") == 1


async def test_a_list_the_caller_stops_reading_is_not_an_error(metrics):
    inner = InMemorySnapshotService()
    for key in ("a", "b"):
        await inner.prepare(key)
    walk = MeasuredSnapshotService(inner, metrics).walk()
    await walk.__anext__()
    await walk.aclose()
    assert calls(metrics, "List") == 1


async def test_layer_prepares_count_remote_hits_and_fallbacks(metrics):
    inner = InMemorySnapshotService()
    snapshots = MeasuredSnapshotService(inner, metrics)
    layer = {REF_LABEL: "sha256:abc"}
    await snapshots.prepare("ns/1/extract-1", "", layer)  # plain snapshot: containerd downloads
    await inner.prepare("ns/1/extract-2")
    with pytest.raises(e.AlreadyExistsError):  # already there: the remote-snapshot signal
        await snapshots.prepare("ns/1/extract-2", "", layer)
    with pytest.raises(e.AlreadyExistsError):  # no layer label: neither hit nor fallback
        await snapshots.prepare("ns/1/extract-2")
    assert metrics.sample("snapmux_remote_snapshot_fallbacks_total") == 1
    assert metrics.sample("snapmux_remote_snapshot_hits_total") == 1


class SizedSnapshots(InMemorySnapshotService):
    """Every snapshot uses 1000 bytes; records which ones were asked."""

    def __init__(self) -> None:
        super().__init__()
        self.usage_asked: list[str] = []

    async def usage(self, key: str) -> Usage:
        self.usage_asked.append(key)
        await super().usage(key)
        return Usage(size=1000, inodes=1)


async def test_inventory_samples_kinds_and_usage_on_a_real_registry():
    registry = CollectorRegistry()
    inner = SizedSnapshots()
    await inner.prepare("a")
    await inner.commit("c", "a")
    await inner.prepare("b", "c")
    await inner.view("v", "c")
    await SnapshotInventory(inner, PrometheusMetricsRegistry(registry)).sample()
    kinds = {k: registry.get_sample_value("snapmux_snapshots", {"kind": k}) for k in ("active", "committed", "view")}
    assert kinds == {"active": 1, "committed": 1, "view": 1}
    assert registry.get_sample_value("snapmux_snapshots_usage_bytes") == 1000
    assert inner.usage_asked == ["c"]  # never a walk of an active container's writable layer


async def test_inventory_follows_removals(metrics):
    inner = InMemorySnapshotService()
    inventory = SnapshotInventory(inner, metrics)
    await inner.prepare("a")
    await inventory.sample()
    await inner.remove("a")
    await inventory.sample()
    assert metrics.sample("snapmux_snapshots", {"kind": "active"}) == 0


async def test_resolver_calls_are_counted_and_timed(metrics):
    resolver = MeasuredAddressResolver(InMemoryAddressResolver({"vm1": ADDRESS}), metrics)
    assert await resolver.resolve("vm1") == ADDRESS
    with pytest.raises(e.NotFoundError):
        await resolver.resolve("vm2")
    assert calls(metrics, "Resolve", "OK", "resolver") == 1
    assert calls(metrics, "Resolve", "NOT_FOUND", "resolver") == 1


class _Connector:
    def __init__(self, failure=None):
        self.failure = failure

    async def connect(self, namespace, address):
        if self.failure:
            raise self.failure
        return InMemorySnapshotService()


async def test_dials_and_dial_failures_are_counted_on_a_real_registry():
    registry = CollectorRegistry()
    metrics = PrometheusMetricsRegistry(registry)
    await MeasuredSnapshotterConnector(_Connector(), metrics).connect("vm1", ADDRESS)
    with pytest.raises(e.UnavailableError):
        await MeasuredSnapshotterConnector(_Connector(e.UnavailableError("no VM")), metrics).connect("vm1", ADDRESS)
    assert registry.get_sample_value("snapmux_vsock_dials_total", {"purpose": "snapshotter"}) == 2
    assert registry.get_sample_value("snapmux_vsock_dial_failures_total", {"purpose": "snapshotter"}) == 1


async def test_cached_clients_gauge_follows_the_cache(metrics):
    gauge = RemoteClientsGauge(metrics)
    assert metrics.sample("snapmux_remote_clients") == 0
    await gauge.connected("vm1", ADDRESS)
    await gauge.connected("vm2", ADDRESS)
    await gauge.connected("vm2", ADDRESS)
    await gauge.disconnected("vm1")
    assert metrics.sample("snapmux_remote_clients") == 1


def test_codes_match_the_wire_error_table():
    from snapmux.adapters.grpc.errors import ERROR_TABLE

    for error, status in ERROR_TABLE.items():
        assert code_of(error("x")) == status.name
    assert code_of(RuntimeError()) == "INTERNAL"
