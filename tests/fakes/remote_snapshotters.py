"""In-memory SnapshotterConnector: one FakeVm per address, with faults.

Its forwarding calls (`SnapshotForwarder`) record what they were sent and answer from the VM's
`answers` (bytes, or a domain error to raise), by default bytes naming the method and the VM."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from snapmux.domain.errors import DomainError, UnavailableError
from snapmux.domain.model import SnapshotterAddress


class FakeVm:
    """One microVM: what it was sent and will answer survive reconnects, as a real VM's state does."""

    def __init__(self, address: SnapshotterAddress) -> None:
        self.address = address
        self.down = False
        self.stalled = False  # List and Cleanup never answer (a paused VM)
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

    def _reachable(self) -> None:
        if self.vm.down or self.closed:
            raise UnavailableError(f"vm {self.vm.address.address} is down")

    async def forward(self, method: str, request: bytes) -> bytes:
        self._reachable()
        if self.vm.stalled and method == "Cleanup":
            await asyncio.Event().wait()
        self.vm.forwarded.append((method, request))
        answer = self.vm.answer(method)
        assert isinstance(answer, bytes)
        return answer

    async def forward_mounts(self, method: str, request: bytes, type_prefix: str) -> bytes:
        return type_prefix.encode() + b"|" + await self.forward(method, request)

    async def forward_stream(self, method: str, request: bytes) -> AsyncIterator[bytes]:
        self._reachable()
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
