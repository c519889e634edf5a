"""In-memory SnapshotterConnector: one InMemorySnapshotService per address (a "VM"), with faults.

Its forwarding calls (`SnapshotForwarder`) record what they were sent and answer from the VM's
`answers` (bytes, or a domain error to raise), by default bytes naming the method and the VM."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence

from snapmux.domain.errors import DomainError, UnavailableError
from snapmux.domain.model import Info, Mount, SnapshotterAddress, Usage
from tests.fakes.snapshots import InMemorySnapshotService


class FakeVm:
    """One microVM: its snapshots survive reconnects, like a real in-VM snapshotter's."""

    def __init__(self, address: SnapshotterAddress) -> None:
        self.address = address
        self.service = InMemorySnapshotService(root=f"/vm/{address.address}")
        self.down = False
        self.stalled = False  # walk and cleanup never answer (a paused VM)
        self.forwarded: list[tuple[str, bytes]] = []
        self.answers: dict[str, bytes | list[bytes] | DomainError] = {}

    def answer(self, method: str) -> bytes | list[bytes]:
        answer = self.answers.get(method, f"{method}@{self.address.address}".encode())
        if isinstance(answer, DomainError):
            raise answer
        return answer


class FakeRemoteSnapshotter:
    """A client to one FakeVm: Unavailable while the VM is down or after close()."""

    def __init__(self, vm: FakeVm) -> None:
        self.vm = vm
        self.closed = False

    def _service(self) -> InMemorySnapshotService:
        if self.vm.down or self.closed:
            raise UnavailableError(f"vm {self.vm.address.address} is down")
        return self.vm.service

    async def stat(self, key: str) -> Info:
        return await self._service().stat(key)

    async def update(self, info: Info, fieldpaths: Sequence[str] = ()) -> Info:
        return await self._service().update(info, fieldpaths)

    async def usage(self, key: str) -> Usage:
        return await self._service().usage(key)

    async def mounts(self, key: str) -> list[Mount]:
        return await self._service().mounts(key)

    async def prepare(self, key: str, parent: str = "", labels: Mapping[str, str] | None = None) -> list[Mount]:
        return await self._service().prepare(key, parent, labels)

    async def view(self, key: str, parent: str = "", labels: Mapping[str, str] | None = None) -> list[Mount]:
        return await self._service().view(key, parent, labels)

    async def commit(self, name: str, key: str, labels: Mapping[str, str] | None = None) -> None:
        await self._service().commit(name, key, labels)

    async def remove(self, key: str) -> None:
        await self._service().remove(key)

    async def walk(self, filters: Sequence[str] = ()) -> AsyncIterator[Info]:
        if self.vm.stalled:
            await asyncio.Event().wait()
        async for info in self._service().walk(filters):
            yield info

    async def cleanup(self) -> None:
        if self.vm.stalled:
            await asyncio.Event().wait()
        await self._service().cleanup()

    async def forward(self, method: str, request: bytes) -> bytes:
        self._service()
        if self.vm.stalled and method == "Cleanup":
            await asyncio.Event().wait()
        self.vm.forwarded.append((method, request))
        answer = self.vm.answer(method)
        assert isinstance(answer, bytes)
        return answer

    async def forward_mounts(self, method: str, request: bytes, type_prefix: str) -> bytes:
        return type_prefix.encode() + b"|" + await self.forward(method, request)

    async def forward_stream(self, method: str, request: bytes) -> AsyncIterator[bytes]:
        self._service()
        if self.vm.stalled:
            await asyncio.Event().wait()
        self.vm.forwarded.append((method, request))
        answer = self.vm.answer(method)
        for reply in [answer] if isinstance(answer, bytes) else answer:
            yield reply

    async def healthy(self) -> bool:
        return not self.vm.down and not self.closed

    async def close(self) -> None:
        self.closed = True


class FakeConnector:
    """Counts connects; `gate` holds dials open (single-flight tests), `failure` fails them."""

    def __init__(self) -> None:
        self.vms: dict[str, FakeVm] = {}
        self.connects: list[str] = []
        self.clients: list[FakeRemoteSnapshotter] = []
        self.gates: dict[str, asyncio.Event] = {}
        self.failure: DomainError | None = None

    def vm(self, address: SnapshotterAddress) -> FakeVm:
        key = f"{address.network}:{address.address}:{address.snapshotter_port}"
        if key not in self.vms:
            self.vms[key] = FakeVm(address)
        return self.vms[key]

    async def connect(self, namespace: str, address: SnapshotterAddress) -> FakeRemoteSnapshotter:
        self.connects.append(namespace)
        if namespace in self.gates:
            await self.gates[namespace].wait()
        if self.failure is not None:
            raise self.failure
        vm = self.vm(address)
        if vm.down:
            raise UnavailableError(f"cannot dial {address.address}: vm is down")
        client = FakeRemoteSnapshotter(vm)
        self.clients.append(client)
        return client
