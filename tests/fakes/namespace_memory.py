"""In-memory NamespaceMemory: what was saved, and how many times."""

from __future__ import annotations


class InMemoryNamespaceMemory:
    def __init__(self, namespaces: frozenset[str] = frozenset()) -> None:
        self.namespaces = frozenset(namespaces)
        self.saves = 0

    async def load(self) -> frozenset[str]:
        return self.namespaces

    async def save(self, namespaces: frozenset[str]) -> None:
        self.namespaces = frozenset(namespaces)
        self.saves += 1
