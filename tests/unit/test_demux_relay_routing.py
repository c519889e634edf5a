"""NamespaceRouter (the demux's SnapshotRelay) over fakes: the request's bytes reach the VM the
routing rules pick, the VM's reply bytes come back. The same router on its real path, over gRPC:
test_demux_routing.py, test_demux_claims_routing.py, test_demux_relay_wire.py."""

from __future__ import annotations

import pytest

from snapmux.application.metrics import MeasuredSnapshotRelay
from snapmux.application.remote_clients import RemoteSnapshotterCache
from snapmux.application.routing import NamespaceRouter
from snapmux.application.target_claims import TargetClaims
from snapmux.domain import errors as e
from snapmux.domain.labels import REF_LABEL
from snapmux.domain.model import SnapshotterAddress
from snapmux.domain.namespaces import current_namespace
from tests.fakes.metrics import InMemoryMetricsRegistry
from tests.fakes.remote_snapshotters import FakeConnector
from tests.fakes.resolver import InMemoryAddressResolver

A = SnapshotterAddress("unix", "/run/vm-a.vsock", 10000)
B = SnapshotterAddress("unix", "/run/vm-b.vsock", 10000)
C = SnapshotterAddress("unix", "/run/vm-c.vsock", 10000)
LAYER_LIST = f'labels."{REF_LABEL}"==chain,parent==""'


@pytest.fixture
def connector():
    return FakeConnector()


@pytest.fixture
async def cache(connector):
    cache = RemoteSnapshotterCache(InMemoryAddressResolver({"vm-a": A, "vm-b": B, "vm-c": C}), connector)
    yield cache
    await cache.close()


@pytest.fixture
def router(cache):
    return NamespaceRouter(cache, mount_type_prefix="vm:", fan_out_timeout=0.05)


async def listed(relay, filters=(), request=b"list-request") -> list[bytes]:
    return [reply async for reply in relay.forward_list(list(filters), request)]


async def test_a_call_reaches_the_vm_of_its_keys_namespace_with_its_bytes_untouched(router, connector):
    assert await router.forward("Stat", "vm-b/1/x", b"\x12\x08vm-b/1/x") == b"Stat@/run/vm-b.vsock"
    assert connector.vm(B).forwarded == [("Stat", b"\x12\x08vm-b/1/x")]
    assert connector.vm(A).forwarded == []


async def test_the_metadata_namespace_wins_over_the_key(router, connector):
    current_namespace.set("vm-a")
    await router.forward("Remove", "vm-b/1/x", b"r")
    assert connector.vm(A).forwarded == [("Remove", b"r")] and connector.vm(B).forwarded == []


async def test_no_namespace_is_failed_precondition_and_a_malformed_one_invalid(router, connector):
    with pytest.raises(e.FailedPreconditionError, match="namespace is required"):
        await router.forward("Stat", "plainkey", b"")
    with pytest.raises(e.InvalidArgumentError):
        await router.forward_mounts("bad ns!/1/x", b"")
    assert connector.connects == []


async def test_mount_replies_are_marked_with_the_routers_prefix(router, connector):
    assert await router.forward_mounts("vm-a/1/x", b"m") == b"vm:|Mounts@/run/vm-a.vsock"
    assert await router.forward_create("View", "vm-a/2/v", {}, b"v") == b"vm:|View@/run/vm-a.vsock"
    assert connector.vm(A).forwarded == [("Mounts", b"m"), ("View", b"v")]


async def test_the_vms_codes_and_messages_pass_unchanged(router, connector):
    connector.vm(A).answers["Usage"] = e.NotFoundError("snapshot vm-a/1/none: not found")
    with pytest.raises(e.NotFoundError, match="^snapshot vm-a/1/none: not found$"):
        await router.forward("Usage", "vm-a/1/none", b"u")


async def test_commit_refuses_a_name_in_another_namespace_before_forwarding(router, connector):
    with pytest.raises(e.InvalidArgumentError, match="another namespace"):
        await router.forward_commit("vm-b/2/layer", "vm-a/1/x", b"c")
    await router.forward_commit("vm-a/2/layer", "vm-a/1/x", b"c")
    assert connector.vm(A).forwarded == [("Commit", b"c")] and connector.vm(B).forwarded == []


async def test_an_unavailable_vm_is_discarded_and_dialled_afresh(router, connector, cache):
    await router.forward("Stat", "vm-a/1/x", b"")
    connector.vm(A).answers["Stat"] = e.UnavailableError("gone")
    with pytest.raises(e.UnavailableError):
        await router.forward("Stat", "vm-a/1/x", b"")
    assert cache.cached() == []
    del connector.vm(A).answers["Stat"]
    await router.forward("Stat", "vm-a/1/x", b"")
    assert connector.connects == ["vm-a", "vm-a"]


async def test_a_namespace_less_list_and_cleanup_fan_out_skipping_dead_and_stalled_vms(router, connector, cache):
    for namespace in ("vm-a", "vm-b", "vm-c"):
        await router.forward("Stat", f"{namespace}/1/x", b"")
    connector.vm(A).answers["List"] = [b"a1", b"a2"]
    connector.vm(B).down = True
    connector.vm(C).stalled = True
    assert await listed(router) == [b"a1", b"a2"]
    assert ("List", b"list-request") in connector.vm(A).forwarded
    assert sorted(r.namespace for r in cache.cached()) == ["vm-a", "vm-c"]  # dead dropped, slow kept
    assert await router.forward_cleanup(b"") == b""  # the stalled VM's Cleanup never answers: skipped
    assert sorted(r.namespace for r in cache.cached()) == ["vm-a", "vm-c"]


async def test_a_list_with_a_namespace_reaches_that_vm_only(router, connector):
    await router.forward("Stat", "vm-b/1/x", b"")
    current_namespace.set("vm-a")
    assert await listed(router) == [b"List@/run/vm-a.vsock"]
    assert ("List", b"list-request") not in connector.vm(B).forwarded


async def test_a_malformed_filter_is_invalid_even_with_no_vm_connected(router):
    with pytest.raises(e.InvalidArgumentError):
        await listed(router, ["name=="])


async def test_cleanup_reaches_every_reachable_vm(router, connector):
    await router.forward("Stat", "vm-a/1/x", b"")
    await router.forward("Stat", "vm-b/1/x", b"")
    connector.vm(B).down = True
    assert await router.forward_cleanup(b"") == b""
    assert ("Cleanup", b"") in connector.vm(A).forwarded


async def test_the_list_after_a_layers_already_exists_goes_to_that_prepares_vm(cache, connector):
    router = NamespaceRouter(cache, "", claims=TargetClaims(hold=10))
    await router.forward("Stat", "vm-b/1/x", b"")  # vm-b connected: a fan-out would reach it
    connector.vm(A).answers["Prepare"] = e.AlreadyExistsError("target snapshot exists")
    with pytest.raises(e.AlreadyExistsError):
        await router.forward_create("Prepare", "vm-a/1/extract chain", {REF_LABEL: "chain"}, b"p")
    assert await listed(router, [LAYER_LIST]) == [b"List@/run/vm-a.vsock"]
    assert ("List", b"list-request") not in connector.vm(B).forwarded
    assert len(await listed(router, [LAYER_LIST])) == 2  # the claim served its one List: fan-out again


async def test_the_relay_decorator_times_each_forward_by_method_and_code(router, connector):
    metrics = InMemoryMetricsRegistry()
    relay = MeasuredSnapshotRelay(router, metrics)
    connector.vm(A).answers["Prepare"] = e.AlreadyExistsError("exists")
    await relay.forward("Stat", "vm-a/1/x", b"")
    await relay.forward_mounts("vm-a/1/x", b"")
    await relay.forward_commit("vm-a/2/y", "vm-a/1/x", b"")
    await relay.forward_cleanup(b"")
    assert await listed(relay)
    with pytest.raises(e.AlreadyExistsError):
        await relay.forward_create("Prepare", "vm-a/3/z", {REF_LABEL: "l"}, b"")
    with pytest.raises(e.FailedPreconditionError):
        await relay.forward("Usage", "nokey", b"")
    for method in ("Stat", "Mounts", "Commit", "Cleanup", "List"):
        assert metrics.sample("snapmux_requests_total", {"service": "snapshots", "method": method, "code": "OK"}) == 1
        assert metrics.sample("snapmux_request_duration_seconds_count", {"service": "snapshots", "method": method}) == 1
    labels = {"service": "snapshots", "method": "Prepare", "code": "ALREADY_EXISTS"}
    assert metrics.sample("snapmux_request_errors_total", labels) == 1
    labels = {"service": "snapshots", "method": "Usage", "code": "FAILED_PRECONDITION"}
    assert metrics.sample("snapmux_request_errors_total", labels) == 1
    assert not metrics.sample("snapmux_remote_snapshot_hits_total")  # the in-VM snapshotter's (docs/metrics.md)
