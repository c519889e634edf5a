"""What both Prometheus integration modules start and ask: a "VM" (a measured in-memory
snapshotter and its metrics endpoint behind a Firecracker hybrid-vsock stand-in, gRPC on port
10000 and metrics on 10001), containerd with the demux as its proxy snapshotter, and a few
questions to the stack."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry

from snapmux.adapters.grpc.server import start_unix_snapshots_server
from snapmux.adapters.http.server import HttpServer
from snapmux.adapters.prometheus.http import MetricsEndpoint
from snapmux.adapters.prometheus.registry import PrometheusMetricsRegistry
from snapmux.application.metrics import MeasuredSnapshotService, SnapshotInventory
from tests.fakes.snapshots import InMemorySnapshotService
from tests.support.containerd import Containerd
from tests.support.firecracker_vsock import FirecrackerVsockStandIn

SNAPSHOTTER_PORT, METRICS_PORT = 10000, 10001
NAMESPACES = ("vm1", "vm2")


@dataclass
class Vm:
    namespace: str
    vsock: FirecrackerVsockStandIn
    grpc: object
    metrics: HttpServer

    async def stop(self) -> None:
        await self.vsock.stop()
        await self.metrics.stop(grace=1.0)
        await self.grpc.stop(None)


async def start_vm(folder: Path, namespace: str) -> Vm:
    """A VM's agent side: a measured snapshotter and its metrics, behind a hybrid vsock socket."""
    registry = CollectorRegistry()
    metrics = PrometheusMetricsRegistry(registry)
    inner = InMemorySnapshotService()
    grpc_path, metrics_path = str(folder / f"{namespace}-grpc.sock"), str(folder / f"{namespace}-metrics.sock")
    grpc_server = await start_unix_snapshots_server(MeasuredSnapshotService(inner, metrics), grpc_path)
    http = HttpServer(MetricsEndpoint(registry, [SnapshotInventory(inner, metrics).sample]), access_log=False)
    await http.start_unix(metrics_path)
    vsock = FirecrackerVsockStandIn(str(folder / f"{namespace}.vsock"), {SNAPSHOTTER_PORT: grpc_path})
    vsock.listen(METRICS_PORT, metrics_path)
    await vsock.start()
    return Vm(namespace, vsock, grpc_server, http)


@contextlib.asynccontextmanager
async def running_containerd(folder: Path, demux_socket: str):
    """containerd's helpers block; run them off the loop the in-process demux serves on."""
    context = Containerd.start(folder, proxy_snapshotters={"demux": demux_socket})
    containerd = await asyncio.to_thread(context.__enter__)
    try:
        yield containerd
    finally:
        await asyncio.to_thread(context.__exit__, None, None, None)


async def ctr_prepare(containerd: Containerd, namespace: str, key: str) -> None:
    await asyncio.to_thread(containerd.ctr, "snapshots", "--snapshotter", "demux", "prepare", key, namespace=namespace)


def by_namespace(targets: list[dict]) -> dict[str, dict]:
    return {t["labels"]["namespace"]: t for t in targets if "namespace" in t["labels"]}


def port_is_free(port: int) -> bool:
    """Another server could listen there now (SO_REUSEADDR: the scrapes' TIME_WAIT remains)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen()
        except OSError:
            return False
        return True
