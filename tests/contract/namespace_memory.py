"""The NamespaceMemory contract: subclass `NamespaceMemoryContract` and provide a `memory`
fixture and a `reopened` one that gives the same store seen afresh (a restart)."""

from __future__ import annotations


class NamespaceMemoryContract:
    async def test_a_new_memory_is_empty(self, memory):
        assert await memory.load() == frozenset()

    async def test_what_is_saved_is_loaded_again_after_a_restart(self, memory, reopened):
        await memory.save(frozenset({"vm-a", "vm-b"}))
        assert await reopened().load() == {"vm-a", "vm-b"}

    async def test_a_save_replaces_the_whole_set(self, memory, reopened):
        await memory.save(frozenset({"vm-a", "vm-b"}))
        await memory.save(frozenset({"vm-b"}))
        assert await reopened().load() == {"vm-b"}

    async def test_an_empty_set_is_saved_too(self, memory, reopened):
        await memory.save(frozenset({"vm-a"}))
        await memory.save(frozenset())
        assert await reopened().load() == frozenset()
