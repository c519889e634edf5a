"""NamespaceRouter over fakes: which VM a call reaches, mount marking, fan-out, recovery."""

from __future__ import annotations

import pytest

from snapmux.application.remote_clients import RemoteSnapshotterCache
from snapmux.application.routing import NamespaceRouter
from snapmux.domain.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError, UnavailableError
from snapmux.domain.model import Info, Kind, Mount, SnapshotterAddress
from snapmux.domain.namespaces import current_namespace
from tests.contract.snapshot_service import SnapshotServiceContract, listed
from tests.fakes.remote_snapshotters import FakeConnector
from tests.fakes.resolver import InMemoryAddressResolver

A = SnapshotterAddress("unix", "/run/vm-a.vsock", 10000)
B = SnapshotterAddress("unix", "/run/vm-b.vsock", 10000)


@pytest.fixture
def resolver():
    return InMemoryAddressResolver({"vm-a": A, "vm-b": B, "ns": A})


@pytest.fixture
def connector():
    return FakeConnector()


@pytest.fixture
async def cache(resolver, connector):
    cache = RemoteSnapshotterCache(resolver, connector)
    yield cache
    await cache.close()


@pytest.fixture
def router(cache):
    return NamespaceRouter(cache, mount_type_prefix="")


class TestRouterContract(SnapshotServiceContract):
    """containerd's semantics survive the router when the caller sends a namespace."""

    @pytest.fixture
    async def snapshots(self, cache):
        current_namespace.set("ns")
        return NamespaceRouter(cache)


def names(vm) -> set[str]:
    return {s.info.name for s in vm.service._snapshots.values()}


async def test_keys_route_by_their_namespace_prefix(router, connector):
    await router.prepare("vm-a/1/x")
    await router.prepare("vm-b/1/y")
    assert names(connector.vm(A)) == {"vm-a/1/x"} and names(connector.vm(B)) == {"vm-b/1/y"}


async def test_metadata_namespace_wins_over_the_key(router, connector):
    current_namespace.set("vm-b")
    await router.prepare("vm-a/1/x")
    assert names(connector.vm(B)) == {"vm-a/1/x"} and names(connector.vm(A)) == set()


async def test_a_call_without_any_namespace_is_failed_precondition(router, connector):
    with pytest.raises(FailedPreconditionError, match="namespace is required"):
        await router.prepare("plainkey")
    assert connector.connects == []


async def test_a_malformed_namespace_is_invalid(router):
    with pytest.raises(InvalidArgumentError):
        await router.stat("bad ns!/1/x")
    current_namespace.set("-nope-")
    with pytest.raises(InvalidArgumentError):
        await router.stat("x")


async def test_commit_routes_by_key_and_refuses_a_name_in_another_namespace(router, connector):
    await router.prepare("vm-a/1/x")
    with pytest.raises(InvalidArgumentError, match="another namespace"):
        await router.commit("vm-b/2/layer", "vm-a/1/x")
    await router.commit("vm-a/2/layer", "vm-a/1/x")
    assert names(connector.vm(A)) == {"vm-a/2/layer"}


async def test_update_routes_by_the_info_name(router, connector):
    await router.prepare("vm-b/1/y", "", {"a": "1"})
    updated = await router.update(Info("vm-b/1/y", Kind.ACTIVE, "", {"a": "2"}), ["labels.a"])
    assert dict(updated.labels) == {"a": "2"} and names(connector.vm(A)) == set()


async def test_mounts_are_marked_vm_local(cache):
    router = NamespaceRouter(cache, mount_type_prefix="vm:")
    prepared = await router.prepare("vm-a/1/x")
    assert prepared == [Mount("vm:bind", "/vm//run/vm-a.vsock/1/fs", "", ("rw", "rbind"))]
    assert await router.mounts("vm-a/1/x") == prepared
    await router.commit("vm-a/2/base", "vm-a/1/x")
    assert [m.type for m in await router.view("vm-a/3/v", "vm-a/2/base")] == ["vm:bind"]


async def test_an_empty_prefix_returns_mounts_unchanged(router, connector):
    assert await router.prepare("vm-a/1/x") == await connector.vm(A).service.mounts("vm-a/1/x")


async def test_remote_errors_pass_through_unchanged(router):
    with pytest.raises(NotFoundError, match="^snapshot vm-a/1/missing: not found$"):
        await router.stat("vm-a/1/missing")


async def test_walk_without_namespace_merges_every_connected_vm(router):
    await router.prepare("vm-a/1/x")
    await router.prepare("vm-b/1/y")
    assert set(await listed(router)) == {"vm-a/1/x", "vm-b/1/y"}
    assert set(await listed(router, "name==vm-b/1/y")) == {"vm-b/1/y"}
    current_namespace.set("vm-a")
    assert set(await listed(router)) == {"vm-a/1/x"}


async def test_walk_without_namespace_skips_a_dead_vm_and_drops_its_client(router, connector, cache):
    await router.prepare("vm-a/1/x")
    await router.prepare("vm-b/1/y")
    connector.vm(B).down = True
    assert set(await listed(router)) == {"vm-a/1/x"}
    assert [r.namespace for r in cache.cached()] == ["vm-a"]


async def test_walk_with_a_bad_filter_is_invalid_even_in_fan_out(router):
    await router.prepare("vm-a/1/x")
    with pytest.raises(InvalidArgumentError):
        await listed(router, "name==")


async def test_cleanup_without_namespace_reaches_every_vm(router, connector):
    await router.prepare("vm-a/1/x")
    await router.prepare("vm-b/1/y")
    connector.vm(B).down = True
    await router.cleanup()
    assert ("cleanup", "") in connector.vm(A).service.calls


async def test_a_dead_vm_fails_its_calls_only_and_recovers_by_itself(router, connector):
    await router.prepare("vm-a/1/x")
    await router.prepare("vm-b/1/y")
    connector.vm(A).down = True
    with pytest.raises(UnavailableError):
        await router.stat("vm-a/1/x")
    with pytest.raises(UnavailableError):
        await router.stat("vm-a/1/x")  # redial fails too while the VM is down
    assert (await router.stat("vm-b/1/y")).kind == Kind.ACTIVE
    connector.vm(A).down = False
    assert (await router.stat("vm-a/1/x")).kind == Kind.ACTIVE
    assert connector.connects.count("vm-a") == 3


async def test_an_unknown_namespace_is_not_found(router):
    with pytest.raises(NotFoundError, match="vm-zzz"):
        await router.prepare("vm-zzz/1/x")


async def test_a_stalled_vm_is_skipped_after_the_fan_out_timeout(cache, connector):
    router = NamespaceRouter(cache, "", fan_out_timeout=0.05)
    await router.prepare("vm-a/1/x")
    await router.prepare("vm-b/1/y")
    connector.vm(B).stalled = True
    assert set(await listed(router)) == {"vm-a/1/x"}
    await router.cleanup()
    assert [r.namespace for r in cache.cached()] == ["vm-a", "vm-b"]  # slow is not dead: kept
