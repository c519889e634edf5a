"""The demux's router on its real path, with "VMs" a test can take down and bring back.

client (GrpcSnapshotService) -> real gRPC -> SnapshotsRelayServicer -> NamespaceRouter ->
GrpcRemoteSnapshotter (VsockSnapshotterConnector, plain unix sockets) -> real gRPC -> each
"VM"'s SnapshotService. The whole vsock chain (stand-ins included) is the `demux` fixture's.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc

from snapmux.adapters.grpc.client import GrpcSnapshotService
from snapmux.adapters.grpc.relay_servicer import SnapshotsRelayServicer
from snapmux.adapters.grpc.server import start_unix_snapshots_server
from snapmux.adapters.vsock.connector import GrpcRemoteSnapshotter, VsockSnapshotterConnector
from snapmux.application.remote_clients import RemoteSnapshotterCache
from snapmux.application.routing import NamespaceRouter
from snapmux.domain.model import SnapshotterAddress
from snapmux.domain.ports import SnapshotService
from tests.fakes.resolver import InMemoryAddressResolver
from tests.support.grpc_client import served_over_grpc


class ServedVm:
    """One "VM": `service` served over gRPC on `path`; its snapshots outlive `stop()`, like a paused VM's."""

    def __init__(self, path: str, service: SnapshotService) -> None:
        self.path, self.service = path, service
        self._server: grpc.aio.Server | None = None

    async def start(self) -> None:
        self._server = await start_unix_snapshots_server(self.service, self.path)

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(None)
            self._server = None


class CountingConnector(VsockSnapshotterConnector):
    """The demux's connector, recording the namespace of each dial."""

    def __init__(self) -> None:
        super().__init__(timeout=2.0, retry_interval=0.02)
        self.connects: list[str] = []

    async def connect(self, namespace: str, address: SnapshotterAddress) -> GrpcRemoteSnapshotter:
        self.connects.append(namespace)
        return await super().connect(namespace, address)


@dataclass
class RelayStack:
    client: GrpcSnapshotService
    vms: dict[str, ServedVm]
    cache: RemoteSnapshotterCache
    connector: CountingConnector


@contextlib.asynccontextmanager
async def relayed_router(
    folder: Path,
    services: Mapping[str, SnapshotService],
    router: Callable[[RemoteSnapshotterCache], NamespaceRouter],
) -> AsyncIterator[RelayStack]:
    """A "VM" per namespace of `services`, and a client of the router `router(cache)` builds; all torn down after."""
    vms = {namespace: ServedVm(str(folder / f"{namespace}.sock"), service) for namespace, service in services.items()}
    connector = CountingConnector()
    cache = RemoteSnapshotterCache(
        InMemoryAddressResolver({ns: SnapshotterAddress("unix", vm.path) for ns, vm in vms.items()}), connector)
    try:
        for vm in vms.values():
            await vm.start()
        servicer = SnapshotsRelayServicer(router(cache))
        async with served_over_grpc(servicer, str(folder / "demux.sock"), "demux") as client:
            yield RelayStack(client, vms, cache, connector)
    finally:
        await cache.close()
        await connector.close()
        for vm in vms.values():
            await vm.stop()
