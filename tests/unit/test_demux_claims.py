"""TargetClaims and the router's use of them: the Walk containerd makes after a remote snapshot
(AlreadyExists on Prepare) goes to the VM of the namespace that prepared, never fanned out."""

from __future__ import annotations

import asyncio

import pytest

from snapmux.application.remote_clients import RemoteSnapshotterCache
from snapmux.application.routing import NamespaceRouter
from snapmux.application.target_claims import TargetClaims
from snapmux.domain.errors import AlreadyExistsError, InvalidArgumentError, NotFoundError
from snapmux.domain.filters import required_value
from snapmux.domain.labels import REF_LABEL
from snapmux.domain.model import Info, Kind, SnapshotterAddress
from snapmux.domain.namespaces import current_namespace
from tests.fakes.remote_snapshotters import FakeConnector
from tests.fakes.resolver import InMemoryAddressResolver
from tests.fakes.snapshots import InMemorySnapshotService, _Snapshot

A = SnapshotterAddress("unix", "/run/vm-a.vsock", 10000)
B = SnapshotterAddress("unix", "/run/vm-b.vsock", 10000)
REF = ("labels", REF_LABEL)


def claimed(claims: TargetClaims) -> dict[str, str | None]:
    """Target -> owning namespace (None while its Prepare is still in flight), read from inside."""
    return {target: claim.owner for target, claim in claims._claims.items()}


def walk_filter(target: str, parent: str = "") -> str:
    """Exactly what containerd 1.6's metadata snapshotter sends after AlreadyExists."""
    return f'labels."{REF_LABEL}"=={target},parent=="{parent}"'


class FakeTimers:
    """An injectable scheduler: nothing fires until the test says so."""

    def __init__(self) -> None:
        self.pending: list[list] = []

    def __call__(self, delay, callback):
        entry = [delay, callback, False]
        self.pending.append(entry)

        class Handle:
            def cancel(self) -> None:
                entry[2] = True

        return Handle()

    def fire_all(self) -> int:
        due, self.pending = [e for e in self.pending if not e[2]], []
        for _, callback, _ in due:
            callback()
        return len(due)


async def settle() -> None:
    """Lets every runnable task run until it blocks (no wall-clock time involved)."""
    for _ in range(20):
        await asyncio.sleep(0)


@pytest.fixture(autouse=True)
def no_metadata():
    token = current_namespace.set(None)
    yield
    current_namespace.reset(token)


# -- the filter helper -----------------------------------------------------------------------------


@pytest.mark.parametrize("filters, expected", [
    ([walk_filter("sha256:abc")], "sha256:abc"),
    (['labels."containerd.io/snapshot.ref"=="quoted,value"'], "quoted,value"),
    (['"labels"."containerd.io/snapshot.ref"==x'], "x"),
    (["name==x"], None),
    ([walk_filter("x"), walk_filter("x", "p")], "x"),
    ([walk_filter("x"), walk_filter("y")], None),
    ([walk_filter("x"), "kind==committed"], None),
    (['labels."containerd.io/snapshot.ref"!=x'], None),
    ([], None),
    ([""], None),
])
def test_required_value_reads_the_one_value_every_filter_demands(filters, expected):
    assert required_value(filters, REF) == expected


def test_required_value_refuses_bad_syntax():
    with pytest.raises(InvalidArgumentError):
        required_value(["labels.==x"], REF)


# -- TargetClaims alone ----------------------------------------------------------------------------


async def already_exists():
    raise AlreadyExistsError("target snapshot: already exists")


async def answered():
    return "mounts"


async def test_already_exists_keeps_the_claim_for_one_list():
    claims = TargetClaims(schedule=FakeTimers())
    with pytest.raises(AlreadyExistsError):
        await claims.prepare("vm-a", "t1", already_exists)
    assert claimed(claims) == {"t1": "vm-a"}
    assert claims.owner(["kind==committed"]) is None  # no ref selector: not this claim's List
    assert claims.owner([walk_filter("t2")]) is None
    assert claims.owner([walk_filter("t1")]) == "vm-a"
    assert claims.owner([walk_filter("t1")]) is None and claimed(claims) == {}


async def test_any_other_outcome_releases_at_once():
    claims = TargetClaims(schedule=FakeTimers())
    assert await claims.prepare("vm-a", "t1", answered) == "mounts"
    assert claimed(claims) == {}

    async def not_found():
        raise NotFoundError("parent snapshot: not found")

    with pytest.raises(NotFoundError):
        await claims.prepare("vm-a", "t1", not_found)
    assert claimed(claims) == {} and claims.owner([walk_filter("t1")]) is None


async def test_a_second_namespace_waits_for_the_first_ones_list_on_that_target_only():
    claims = TargetClaims(schedule=FakeTimers())
    with pytest.raises(AlreadyExistsError):
        await claims.prepare("vm-a", "t1", already_exists)
    forwarded = []

    async def record(namespace):
        forwarded.append(namespace)
        raise AlreadyExistsError("already exists")

    waiting = asyncio.create_task(claims.prepare("vm-b", "t1", lambda: record("vm-b")))
    assert await claims.prepare("vm-b", "t2", answered) == "mounts"  # another layer is not held up
    await settle()
    assert forwarded == [] and not waiting.done()
    assert claims.owner([walk_filter("t1")]) == "vm-a"
    with pytest.raises(AlreadyExistsError):
        await waiting
    assert forwarded == ["vm-b"] and claims.owner([walk_filter("t1")]) == "vm-b"


async def test_an_unanswered_claim_expires_after_the_hold():
    timers = FakeTimers()
    claims = TargetClaims(hold=7.5, schedule=timers)
    with pytest.raises(AlreadyExistsError):
        await claims.prepare("vm-a", "t1", already_exists)
    waiting = asyncio.create_task(claims.prepare("vm-b", "t1", answered))
    await settle()
    assert not waiting.done() and [e[0] for e in timers.pending] == [7.5]
    assert timers.fire_all() == 1
    assert await waiting == "mounts"
    assert claimed(claims) == {} and claims.owner([walk_filter("t1")]) is None


async def test_a_late_timer_never_releases_a_newer_claim():
    class IgnoresCancel(FakeTimers):
        def fire_all(self) -> int:
            due, self.pending = self.pending, []
            for _, callback, _ in due:
                callback()
            return len(due)

    timers = IgnoresCancel()
    claims = TargetClaims(schedule=timers)
    with pytest.raises(AlreadyExistsError):
        await claims.prepare("vm-a", "t1", already_exists)
    assert claims.owner([walk_filter("t1")]) == "vm-a"
    with pytest.raises(AlreadyExistsError):
        await claims.prepare("vm-b", "t1", already_exists)
    timers.pending = timers.pending[:1]  # only vm-a's (released) timer fires
    timers.fire_all()
    assert claimed(claims) == {"t1": "vm-b"}


async def test_a_cancelled_waiter_leaves_nothing_behind():
    claims = TargetClaims(schedule=FakeTimers())
    with pytest.raises(AlreadyExistsError):
        await claims.prepare("vm-a", "t1", already_exists)
    waiting = asyncio.create_task(claims.prepare("vm-b", "t1", answered))
    await settle()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert claims.owner([walk_filter("t1")]) == "vm-a"
    assert claimed(claims) == {}


async def test_the_default_hold_runs_on_the_event_loop():
    claims = TargetClaims(hold=0.0)
    with pytest.raises(AlreadyExistsError):
        await claims.prepare("vm-a", "t1", already_exists)
    released = asyncio.create_task(claims.prepare("vm-b", "t1", answered))
    assert await asyncio.wait_for(released, 5) == "mounts"


# -- through the router, over fake VMs that adopt layers like cvmfs-snapshotter ---------------------


class AdoptingVm(InMemorySnapshotService):
    """A Prepare with the ref label adopts `<ns>/<id>/<target>` and answers AlreadyExists;
    `gate`, when set, holds such Prepares until the test opens it."""

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.remote_prepares: list[str] = []
        self.gate: asyncio.Event | None = None

    async def prepare(self, key, parent="", labels=None):
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
def connector():
    connector = FakeConnector()
    for address in (A, B):
        connector.vm(address).service = AdoptingVm(f"/vm/{address.address}")
    return connector


@pytest.fixture
async def cache(connector):
    cache = RemoteSnapshotterCache(InMemoryAddressResolver({"vm-a": A, "vm-b": B}), connector)
    yield cache
    await cache.close()


@pytest.fixture
def timers():
    return FakeTimers()


@pytest.fixture
def claims(timers):
    return TargetClaims(schedule=timers)


@pytest.fixture
def router(cache, claims):
    return NamespaceRouter(cache, "", claims=claims)


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


async def test_concurrent_pulls_of_one_layer_are_serialised_on_that_layer(router, connector):
    vm_a, vm_b = connector.vm(A).service, connector.vm(B).service
    vm_a.gate = asyncio.Event()
    pull_a = asyncio.create_task(containerd_pulls_layer(router, "vm-a", 1, "chain"))
    await settle()
    pull_b = asyncio.create_task(containerd_pulls_layer(router, "vm-b", 1, "chain"))
    await settle()
    assert vm_a.remote_prepares == ["vm-a/1/extract-1 chain"] and vm_b.remote_prepares == []
    assert await containerd_pulls_layer(router, "vm-b", 2, "other") == "vm-b/2/other"  # not held up
    vm_a.gate.set()
    assert (await pull_a, await pull_b) == ("vm-a/1/chain", "vm-b/1/chain")


async def test_a_failed_prepare_releases_the_layer_at_once(router, claims, connector):
    class FailingVm(AdoptingVm):
        async def prepare(self, key, parent="", labels=None):
            raise NotFoundError(f"parent snapshot {parent}: not found")

    connector.vm(A).service = FailingVm("/vm/a")
    with pytest.raises(NotFoundError):
        await router.prepare("vm-a/1/extract", "vm-a/0/missing", {REF_LABEL: "chain"})
    assert claimed(claims) == {}
    assert await containerd_pulls_layer(router, "vm-b", 1, "chain") == "vm-b/1/chain"


async def test_a_list_that_never_came_releases_the_layer_after_the_hold(router, claims, timers):
    with pytest.raises(AlreadyExistsError):
        await router.prepare("vm-a/1/extract", "", {REF_LABEL: "chain"})  # containerd gave up: no List
    pull_b = asyncio.create_task(containerd_pulls_layer(router, "vm-b", 1, "chain"))
    await settle()
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
