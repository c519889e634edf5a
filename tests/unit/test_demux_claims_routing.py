"""The router's use of TargetClaims: the Walk containerd makes after a remote snapshot
(AlreadyExists on Prepare) goes to the VM of the namespace that prepared, never fanned out.
On the router's real path (tests/support/relay_stack.py): a gRPC client -> the relay servicer ->
the router -> gRPC clients of "VMs" that adopt layers. TargetClaims alone: test_demux_claims.py."""

from __future__ import annotations

import asyncio

import pytest

from snapmux.application.routing import NamespaceRouter
from snapmux.application.target_claims import TargetClaims
from snapmux.domain.errors import AlreadyExistsError, DomainError, NotFoundError
from snapmux.domain.labels import REF_LABEL
from snapmux.domain.model import Info, Kind
from snapmux.domain.namespaces import current_namespace
from tests.fakes.snapshots import InMemorySnapshotService, _Snapshot
from tests.fakes.timers import FakeTimers
from tests.support.claims import claimed, users, walk_filter
from tests.support.polling import until
from tests.support.relay_stack import relayed_router


@pytest.fixture(autouse=True)
def no_metadata():
    token = current_namespace.set(None)
    yield
    current_namespace.reset(token)


class AdoptingVm(InMemorySnapshotService):
    """A Prepare with the ref label adopts `<ns>/<id>/<target>` and answers AlreadyExists, like
    cvmfs-snapshotter; `gate`, when set, holds such Prepares until the test opens it; `failure`,
    when set, is every Prepare's answer."""

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.remote_prepares: list[str] = []
        self.gate: asyncio.Event | None = None
        self.failure: DomainError | None = None

    async def prepare(self, key, parent="", labels=None):
        if self.failure is not None:
            raise self.failure
        target = (labels or {}).get(REF_LABEL)
        if not target:
            return await super().prepare(key, parent, labels)
        self.remote_prepares.append(key)
        if self.gate is not None:
            await self.gate.wait()
        name = "/".join(key.split("/")[:2] + [target])
        async with self._lock:
            self._snapshots[name] = _Snapshot(self._next_id, Info(name, Kind.COMMITTED, parent, dict(labels)))
            self._next_id += 1
        raise AlreadyExistsError(f"target snapshot {name!r}: already exists")


@pytest.fixture
def timers():
    return FakeTimers()


@pytest.fixture
def claims(timers):
    return TargetClaims(schedule=timers)


@pytest.fixture
def vms():
    return {namespace: AdoptingVm(f"/vm/{namespace}") for namespace in ("vm-a", "vm-b")}


@pytest.fixture
async def router(tmp_path, vms, claims):
    """The demux's client: every call crosses the relay servicer and the router, then the VM's gRPC."""
    async with relayed_router(tmp_path, vms, lambda cache: NamespaceRouter(cache, "", claims=claims)) as stack:
        yield stack.client


async def names(router, *filters: str) -> list[str]:
    return [info.name async for info in router.walk(list(filters))]


async def containerd_pulls_layer(router, namespace: str, sid: int, target: str, parent: str = "") -> str:
    """containerd 1.6's remote-snapshot dance, no namespace metadata: returns the backend key it records."""
    with pytest.raises(AlreadyExistsError):
        await router.prepare(f"{namespace}/{sid}/extract-{sid} {target}", parent, {REF_LABEL: target})
    return (await names(router, walk_filter(target, parent)))[0]


async def test_each_namespace_records_its_own_vms_layer(router, claims):
    assert await containerd_pulls_layer(router, "vm-a", 1, "chain") == "vm-a/1/chain"
    assert await containerd_pulls_layer(router, "vm-b", 1, "chain") == "vm-b/1/chain"
    # the same List without a claim fans out and finds both: the first match could be anyone's
    assert sorted(await names(router, walk_filter("chain"))) == ["vm-a/1/chain", "vm-b/1/chain"]
    assert claimed(claims) == {}


async def test_concurrent_pulls_of_one_layer_are_serialised_on_that_layer(router, vms, claims):
    vm_a, vm_b = vms["vm-a"], vms["vm-b"]
    vm_a.gate = asyncio.Event()
    try:
        pull_a = asyncio.create_task(containerd_pulls_layer(router, "vm-a", 1, "chain"))
        await until(lambda: vm_a.remote_prepares == ["vm-a/1/extract-1 chain"], "vm-a's Prepare reaches its VM")
        pull_b = asyncio.create_task(containerd_pulls_layer(router, "vm-b", 1, "chain"))
        await until(lambda: users(claims, "chain") == 2, "vm-b's Prepare waits for the layer's claim")
        assert vm_b.remote_prepares == []
        assert await containerd_pulls_layer(router, "vm-b", 2, "other") == "vm-b/2/other"  # not held up
    finally:
        vm_a.gate.set()
    assert (await pull_a, await pull_b) == ("vm-a/1/chain", "vm-b/1/chain")


async def test_a_failed_prepare_releases_the_layer_at_once(router, claims, vms):
    vms["vm-a"].failure = NotFoundError("parent snapshot vm-a/0/missing: not found")
    with pytest.raises(NotFoundError):
        await router.prepare("vm-a/1/extract", "vm-a/0/missing", {REF_LABEL: "chain"})
    assert claimed(claims) == {}
    assert await containerd_pulls_layer(router, "vm-b", 1, "chain") == "vm-b/1/chain"


async def test_a_list_that_never_came_releases_the_layer_after_the_hold(router, claims, timers):
    with pytest.raises(AlreadyExistsError):
        await router.prepare("vm-a/1/extract", "", {REF_LABEL: "chain"})  # containerd gave up: no List
    pull_b = asyncio.create_task(containerd_pulls_layer(router, "vm-b", 1, "chain"))
    await until(lambda: users(claims, "chain") == 2, "vm-b's Prepare waits for the layer's claim")
    assert not pull_b.done()
    assert timers.fire_all() == 1
    assert await pull_b == "vm-b/1/chain"


async def test_other_lists_keep_fanning_out_while_a_layer_is_claimed(router, claims):
    await router.prepare("vm-b/1/c")
    with pytest.raises(AlreadyExistsError):
        await router.prepare("vm-a/1/extract", "", {REF_LABEL: "chain"})
    assert sorted(await names(router)) == ["vm-a/1/chain", "vm-b/1/c"]
    assert claimed(claims) == {"chain": "vm-a"}


async def test_with_namespace_metadata_nothing_is_claimed(router, claims):
    current_namespace.set("vm-a")
    with pytest.raises(AlreadyExistsError):
        await router.prepare("vm-a/1/extract", "", {REF_LABEL: "chain"})
    assert claimed(claims) == {}
