"""Remembering the namespaces whose VMs the demux reached, and dialling them again after a restart."""

from __future__ import annotations

import json
import os
import stat

import pytest

from snapmux.adapters.state.namespace_file import JsonFileNamespaceMemory
from snapmux.application.known_namespaces import KnownNamespaces, reconnect_known
from snapmux.application.remote_clients import RemoteSnapshotterCache
from snapmux.domain.errors import UnavailableError
from snapmux.domain.model import SnapshotterAddress
from tests.contract.namespace_memory import NamespaceMemoryContract
from tests.fakes.namespace_memory import InMemoryNamespaceMemory
from tests.fakes.remote_snapshotters import FakeConnector
from tests.fakes.resolver import InMemoryAddressResolver

A = SnapshotterAddress("unix", "/run/vm-a.vsock", 10000)
B = SnapshotterAddress("unix", "/run/vm-b.vsock", 10000)


class TestInMemoryNamespaceMemory(NamespaceMemoryContract):
    @pytest.fixture
    def memory(self):
        self.store = InMemoryNamespaceMemory()
        return self.store

    @pytest.fixture
    def reopened(self, memory):
        return lambda: memory


class TestJsonFileNamespaceMemory(NamespaceMemoryContract):
    @pytest.fixture
    def memory(self, tmp_path):
        return JsonFileNamespaceMemory(str(tmp_path / "state" / "known-namespaces.json"))

    @pytest.fixture
    def reopened(self, tmp_path):
        return lambda: JsonFileNamespaceMemory(str(tmp_path / "state" / "known-namespaces.json"))


async def test_the_file_is_private_and_replaced_whole(tmp_path):
    path = tmp_path / "state" / "known-namespaces.json"
    await JsonFileNamespaceMemory(str(path)).save(frozenset({"vm-b", "vm-a"}))
    assert json.loads(path.read_text()) == {"namespaces": ["vm-a", "vm-b"]}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert os.listdir(path.parent) == ["known-namespaces.json"]  # nothing staged left behind


@pytest.mark.parametrize("content", [b"", b"{not json", b"[]", b'{"namespaces": "vm-a"}', b"\xff\xfe"])
async def test_an_unreadable_file_is_an_empty_memory_not_a_failed_start(tmp_path, content, caplog):
    path = tmp_path / "known-namespaces.json"
    path.write_bytes(content)
    assert await JsonFileNamespaceMemory(str(path)).load() == frozenset()
    assert "ignoring the known-namespaces file" in caplog.text


async def test_invalid_names_in_the_file_are_skipped_by_name(tmp_path, caplog):
    path = tmp_path / "known-namespaces.json"
    path.write_text(json.dumps({"namespaces": ["vm-a", "../etc", 7, "", "vm-b"]}))
    assert await JsonFileNamespaceMemory(str(path)).load() == {"vm-a", "vm-b"}
    assert "'../etc'" in caplog.text and "7 is not a namespace name" in caplog.text


@pytest.fixture
def connector():
    return FakeConnector()


async def test_every_namespace_reached_is_remembered_once(connector):
    memory = InMemoryNamespaceMemory()
    known = KnownNamespaces(memory)
    cache = RemoteSnapshotterCache(InMemoryAddressResolver({"vm-a": A, "vm-b": B}), connector, [known])
    try:
        for namespace in ("vm-a", "vm-b", "vm-a"):
            await cache.get(namespace)
        await cache.discard("vm-a", (await cache.get("vm-a")))  # a dropped client: the VM may come back
        await cache.get("vm-a")
    finally:
        await cache.close()
    assert memory.namespaces == {"vm-a", "vm-b"} and memory.saves == 2


async def test_a_restart_dials_the_remembered_and_forgets_those_without_a_vm(connector):
    memory = InMemoryNamespaceMemory(frozenset({"vm-a", "vm-b", "gone"}))
    known = KnownNamespaces(memory)
    cache = RemoteSnapshotterCache(InMemoryAddressResolver({"vm-a": A, "vm-b": B}), connector, [known])
    try:
        await reconnect_known(cache, known, await known.load())
        assert sorted(remote.namespace for remote in cache.cached()) == ["vm-a", "vm-b"]
    finally:
        await cache.close()
    assert memory.namespaces == {"vm-a", "vm-b"}  # the resolver no longer knows "gone"


async def test_an_unreachable_vm_stays_remembered_for_the_next_start(connector):
    memory = InMemoryNamespaceMemory(frozenset({"vm-a", "vm-b"}))
    known = KnownNamespaces(memory)
    connector.failure = UnavailableError("vsock socket missing")
    cache = RemoteSnapshotterCache(InMemoryAddressResolver({"vm-a": A, "vm-b": B}), connector, [known])
    try:
        await reconnect_known(cache, known, await known.load())
        assert cache.cached() == []
    finally:
        await cache.close()
    assert memory.namespaces == {"vm-a", "vm-b"} and memory.saves == 0


async def test_without_a_memory_nothing_is_remembered_or_dialled(connector):
    known = KnownNamespaces(None)
    cache = RemoteSnapshotterCache(InMemoryAddressResolver({"vm-a": A}), connector, [known])
    try:
        await cache.get("vm-a")
        assert await known.load() == frozenset({"vm-a"})  # this run's, kept in memory only
    finally:
        await cache.close()
    assert await KnownNamespaces(None).load() == frozenset()
