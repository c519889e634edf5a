"""The AddressResolver contract, for every implementation.

Subclass `AddressResolverContract` and provide an async `resolver` fixture whose
known namespaces are `vm-a` (unix address `expected_address("vm-a")`, as the
subclass defines it) and `vm-b`, and that does not know `nope`. It runs against
the in-memory fake, each agent backend directly, and `HttpAddressResolver`
talking to the real agent over loopback HTTP.
"""

from __future__ import annotations

import asyncio

import pytest

from snapmux.domain.errors import InvalidArgumentError, NotFoundError
from snapmux.domain.model import SnapshotterAddress

HOSTILE_NAMESPACES = ["", "../etc", "a/b", "..", "a" * 77, "-lead", "trail-", "a..b", "nul\x00", "ünï", "a b", '"vm-a"']


class AddressResolverContract:
    def expected_address(self, namespace: str) -> str:
        raise NotImplementedError

    async def test_known_namespace_resolves_to_its_address(self, resolver):
        address = await resolver.resolve("vm-a")
        assert isinstance(address, SnapshotterAddress)
        assert (address.network, address.address) == ("unix", self.expected_address("vm-a"))

    async def test_each_namespace_gets_its_own_address(self, resolver):
        a, b = await resolver.resolve("vm-a"), await resolver.resolve("vm-b")
        assert a.address != b.address and b.address == self.expected_address("vm-b")

    async def test_labels_carry_the_namespace(self, resolver):
        address = await resolver.resolve("vm-a")
        assert address.labels["namespace"] == "vm-a"

    async def test_ports_are_integers_or_absent(self, resolver):
        address = await resolver.resolve("vm-a")
        for port in (address.snapshotter_port, address.metrics_port):
            assert port is None or (isinstance(port, int) and 0 < port < 65536)

    async def test_unknown_namespace_is_not_found(self, resolver):
        with pytest.raises(NotFoundError):
            await resolver.resolve("nope")

    @pytest.mark.parametrize("namespace", HOSTILE_NAMESPACES)
    async def test_invalid_namespace_is_invalid_argument(self, resolver, namespace):
        with pytest.raises(InvalidArgumentError):
            await resolver.resolve(namespace)

    async def test_resolving_again_gives_the_same_answer(self, resolver):
        assert await resolver.resolve("vm-a") == await resolver.resolve("vm-a")

    async def test_concurrent_lookups_each_get_their_own_answer(self, resolver):
        names = ["vm-a", "vm-b", "nope"] * 5
        results = await asyncio.gather(*(resolver.resolve(n) for n in names), return_exceptions=True)
        for name, result in zip(names, results):
            if name == "nope":
                assert isinstance(result, NotFoundError)
            else:
                assert result.address == self.expected_address(name)
