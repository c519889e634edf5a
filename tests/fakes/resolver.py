"""In-memory AddressResolver: a namespace -> address map with switchable failure."""

from __future__ import annotations

from snapmux.domain.errors import DomainError, NotFoundError
from snapmux.domain.model import SnapshotterAddress
from snapmux.domain.namespaces import validate_namespace


class InMemoryAddressResolver:
    def __init__(self, addresses: dict[str, SnapshotterAddress] | None = None) -> None:
        self.addresses: dict[str, SnapshotterAddress] = dict(addresses or {})
        self.failure: DomainError | None = None
        self.calls: list[str] = []

    async def resolve(self, namespace: str) -> SnapshotterAddress:
        self.calls.append(namespace)
        validate_namespace(namespace)
        if self.failure is not None:
            raise self.failure
        try:
            return self.addresses[namespace]
        except KeyError:
            raise NotFoundError(f"no snapshotter known for namespace {namespace!r}") from None
