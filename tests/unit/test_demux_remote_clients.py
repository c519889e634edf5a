"""The per-namespace client cache: single-flight, no cached failures, eviction, close, listeners."""

from __future__ import annotations

import asyncio

import pytest

from snapmux.application.remote_clients import RemoteSnapshotterCache
from snapmux.domain.deadlines import current_deadline, deadline_in
from snapmux.domain.errors import NotFoundError, UnavailableError
from snapmux.domain.model import SnapshotterAddress
from tests.fakes.remote_snapshotters import FakeConnector
from tests.conftest import EVERY_LOOP
from tests.fakes.resolver import InMemoryAddressResolver

A = SnapshotterAddress("unix", "/run/vm-a.vsock", 10000)
B = SnapshotterAddress("unix", "/run/vm-b.vsock", 10000)


class RecordingListener:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    async def connected(self, namespace: str, address: SnapshotterAddress) -> None:
        self.events.append(("connected", namespace))

    async def disconnected(self, namespace: str) -> None:
        self.events.append(("disconnected", namespace))


class BrokenListener:
    async def connected(self, namespace: str, address: SnapshotterAddress) -> None:
        raise RuntimeError("listener bug")

    async def disconnected(self, namespace: str) -> None:
        raise RuntimeError("listener bug")


@pytest.fixture
def resolver():
    return InMemoryAddressResolver({"vm-a": A, "vm-b": B})


@pytest.fixture
def connector():
    return FakeConnector()


@pytest.fixture
def listener():
    return RecordingListener()


@pytest.fixture
async def cache(resolver, connector, listener):
    cache = RemoteSnapshotterCache(resolver, connector, [BrokenListener(), listener], poll_interval=0)
    await cache.start()
    yield cache
    await cache.close()


async def test_concurrent_first_calls_share_one_dial(cache, connector):
    connector.gates["vm-a"] = asyncio.Event()
    waiters = [asyncio.create_task(cache.get("vm-a")) for _ in range(50)]
    await asyncio.sleep(0)
    connector.gates["vm-a"].set()
    clients = await asyncio.gather(*waiters)
    assert connector.connects == ["vm-a"]
    assert all(c is clients[0] for c in clients)
    assert await cache.get("vm-a") is clients[0]


class YieldingConnector(FakeConnector):
    """A dial that gives the loop many turns, so callers arrive at every stage of it."""

    async def connect(self, namespace: str, address: SnapshotterAddress):  # type: ignore[no-untyped-def]
        for _ in range(20):
            await asyncio.sleep(0)
        return await super().connect(namespace, address)


@pytest.mark.asyncio(loop_factories=EVERY_LOOP)
async def test_callers_arriving_all_through_a_dial_share_it_on_either_loop(resolver, listener):
    connector = YieldingConnector()
    cache = RemoteSnapshotterCache(resolver, connector, [listener], poll_interval=0)

    async def caller(turns: int):  # type: ignore[no-untyped-def]
        for _ in range(turns):
            await asyncio.sleep(0)
        return await cache.get("vm-a")

    try:
        clients = await asyncio.gather(*(caller(n % 40) for n in range(200)))
    finally:
        await cache.close()
    assert connector.connects == ["vm-a"] and len({id(c) for c in clients}) == 1
    assert listener.events[0] == ("connected", "vm-a")


async def test_a_slow_dial_does_not_block_other_namespaces(cache, connector):
    connector.gates["vm-a"] = asyncio.Event()
    stuck = asyncio.create_task(cache.get("vm-a"))
    client_b = await asyncio.wait_for(cache.get("vm-b"), 5)
    assert not stuck.done() and client_b.vm.address == B
    connector.gates["vm-a"].set()
    assert (await stuck).vm.address == A


async def test_a_caller_going_away_does_not_abort_the_shared_dial(cache, connector):
    connector.gates["vm-a"] = asyncio.Event()
    impatient = asyncio.create_task(cache.get("vm-a"))
    patient = asyncio.create_task(cache.get("vm-a"))
    await asyncio.sleep(0)
    impatient.cancel()
    connector.gates["vm-a"].set()
    assert (await patient).vm.address == A
    assert impatient.cancelled() and connector.connects == ["vm-a"]


async def test_the_shared_dial_is_bound_by_no_single_callers_deadline(resolver):
    class DeadlineSeeingConnector(FakeConnector):
        async def connect(self, namespace, address):
            self.seen = current_deadline.get()
            return await super().connect(namespace, address)

    async def call_with_a_deadline():
        current_deadline.set(deadline_in(60))
        return await cache.get("vm-a")

    connector = DeadlineSeeingConnector()
    cache = RemoteSnapshotterCache(resolver, connector)
    try:
        assert (await asyncio.create_task(call_with_a_deadline())).vm.address == A
        assert connector.seen is None
    finally:
        await cache.close()


async def test_failures_are_not_cached(cache, resolver, connector):
    resolver.failure = UnavailableError("resolver down")
    with pytest.raises(UnavailableError, match="resolver down"):
        await cache.get("vm-a")
    resolver.failure = None
    connector.failure = UnavailableError("dial failed")
    with pytest.raises(UnavailableError, match="dial failed"):
        await cache.get("vm-a")
    connector.failure = None
    assert (await cache.get("vm-a")).vm.address == A
    assert resolver.calls == ["vm-a", "vm-a", "vm-a"] and cache.cached()[0].namespace == "vm-a"


async def test_unknown_namespace_is_not_found_and_nothing_is_cached(cache):
    with pytest.raises(NotFoundError):
        await cache.get("vm-zzz")
    assert cache.cached() == []


async def test_listeners_hear_connect_and_eviction_and_a_broken_one_is_ignored(cache, connector, listener):
    client = await cache.get("vm-a")
    connector.vm(A).down = True
    assert await cache.poll_once() == ["vm-a"]
    assert listener.events == [("connected", "vm-a"), ("disconnected", "vm-a")]
    await asyncio.sleep(0)
    assert client.closed and cache.cached() == []


async def test_healthy_clients_survive_the_poll(cache):
    await cache.get("vm-a")
    await cache.get("vm-b")
    assert await cache.poll_once() == []
    assert {r.namespace for r in cache.cached()} == {"vm-a", "vm-b"}


async def test_discard_drops_only_the_client_that_failed(cache, connector):
    old = await cache.get("vm-a")
    await cache.discard("vm-a", old)
    new = await cache.get("vm-a")
    assert new is not old and connector.connects == ["vm-a", "vm-a"]
    await cache.discard("vm-a", old)  # a late report about the old client
    assert await cache.get("vm-a") is new


async def test_connected_is_the_cached_client_or_none_and_never_dials(cache, connector):
    assert cache.connected("vm-a") is None and connector.connects == []
    client = await cache.get("vm-a")
    assert cache.connected("vm-a") is client and cache.connected("vm-b") is None
    await cache.discard("vm-a", client)
    assert cache.connected("vm-a") is None and connector.connects == ["vm-a"]


async def test_the_poll_loop_evicts_by_itself(resolver, connector, listener):
    cache = RemoteSnapshotterCache(resolver, connector, [listener], poll_interval=0.01)
    await cache.start()
    try:
        client = await cache.get("vm-a")
        connector.vm(A).down = True
        for _ in range(500):
            if not cache.cached():
                break
            await asyncio.sleep(0.01)
        assert cache.cached() == [] and ("disconnected", "vm-a") in listener.events
        connector.vm(A).down = False
        assert await cache.get("vm-a") is not client
    finally:
        await cache.close()


async def test_no_poll_when_eviction_is_disabled(resolver, connector):
    cache = RemoteSnapshotterCache(resolver, connector, evict_on_connection_failure=False, poll_interval=0.01)
    await cache.start()
    try:
        await cache.get("vm-a")
        connector.vm(A).down = True
        await asyncio.sleep(0.05)
        assert [r.namespace for r in cache.cached()] == ["vm-a"]
    finally:
        await cache.close()


async def test_close_closes_every_client_and_refuses_new_calls(resolver, connector, listener):
    cache = RemoteSnapshotterCache(resolver, connector, [listener])
    await cache.start()
    a, b = await cache.get("vm-a"), await cache.get("vm-b")
    await cache.close()
    assert a.closed and b.closed and cache.cached() == []
    assert sorted(e for e in listener.events if e[0] == "disconnected") == [
        ("disconnected", "vm-a"),
        ("disconnected", "vm-b"),
    ]
    with pytest.raises(UnavailableError, match="shutting down"):
        await cache.get("vm-a")


async def test_close_abandons_a_dial_in_flight(resolver, connector):
    cache = RemoteSnapshotterCache(resolver, connector)
    connector.gates["vm-a"] = asyncio.Event()
    pending = asyncio.create_task(cache.get("vm-a"))
    await asyncio.sleep(0)
    await cache.close()
    with pytest.raises(UnavailableError, match="shutting down"):
        await pending
    assert cache.cached() == [] and connector.clients == []


class SlowListener(RecordingListener):
    async def disconnected(self, namespace: str) -> None:
        await asyncio.sleep(0.05)
        await super().disconnected(namespace)


async def test_listeners_hear_disconnect_of_the_old_before_connect_of_the_new(resolver, connector):
    listener = SlowListener()
    cache = RemoteSnapshotterCache(resolver, connector, [listener])
    try:
        old = await cache.get("vm-a")
        evicting = asyncio.create_task(cache.discard("vm-a", old))
        await asyncio.sleep(0)
        new = await cache.get("vm-a")  # redials while the slow listener is still hearing the eviction
        await evicting
        assert new is not old
        assert listener.events == [("connected", "vm-a"), ("disconnected", "vm-a"), ("connected", "vm-a")]
    finally:
        await cache.close()


async def test_resolve_and_dial_failures_are_warnings_naming_the_namespace(cache, connector, caplog):
    caplog.set_level("WARNING", logger="snapmux.application.remote_clients")
    with pytest.raises(NotFoundError):
        await cache.get("no-such-vm")
    connector.failure = UnavailableError("cannot dial /run/vm-a.vsock: vm is down")
    with pytest.raises(UnavailableError):
        await cache.get("vm-a")
    warnings = [(r.levelname, r.namespace, r.getMessage()) for r in caplog.records]
    assert warnings[0][:2] == ("WARNING", "no-such-vm") and "resolving the snapshotter of namespace no-such-vm" in warnings[0][2]
    assert warnings[1] == ("WARNING", "vm-a", "dialling the snapshotter of namespace vm-a at unix:/run/vm-a.vsock port 10000 "
                           "failed: cannot dial /run/vm-a.vsock: vm is down")


class SlowToHearListener(RecordingListener):
    """connected() takes its time (a metrics proxy starting): the entry is in use meanwhile."""

    def __init__(self) -> None:
        super().__init__()
        self.hold = asyncio.Event()

    async def connected(self, namespace: str, address: SnapshotterAddress) -> None:
        await self.hold.wait()
        await super().connected(namespace, address)


async def test_a_client_dropped_while_its_connect_is_announced_is_not_handed_out_again(resolver, connector):
    listener = SlowToHearListener()
    cache = RemoteSnapshotterCache(resolver, connector, [listener], poll_interval=0)
    try:
        first = asyncio.create_task(cache.get("vm-a"))
        while not cache.cached():
            await asyncio.sleep(0)
        old = await cache.get("vm-a")  # served from the cache while the dial still announces it
        evicting = asyncio.create_task(cache.discard("vm-a", old))
        while cache.cached():
            await asyncio.sleep(0)
        again = asyncio.create_task(cache.get("vm-a"))
        listener.hold.set()
        await asyncio.gather(first, evicting)
        assert await again is not old and connector.connects == ["vm-a", "vm-a"]
    finally:
        await cache.close()
