"""Asks firecracker-containerd's control plugin where a VM's vsock is, as the
upstream example agent does: ttrpc `GetVMInfo` on `<containerd socket>.ttrpc`.

The VM id is the containerd namespace being resolved, and the call carries the
same namespace in ttrpc metadata, because containerd's plugins refuse calls
without one. Upstream's proto has no package, so the service is plain
"Firecracker".
"""

from __future__ import annotations

from google.protobuf.message import DecodeError

from snapmux.adapters.pb.firecracker import firecracker_pb2
from snapmux.adapters.ttrpc.client import TtrpcClient
from snapmux.domain.errors import UnavailableError
from snapmux.domain.model import SnapshotterAddress
from snapmux.domain.namespaces import validate_namespace

DEFAULT_CONTAINERD_SOCKET = "/run/firecracker-containerd/containerd.sock"
SERVICE = "Firecracker"
METHOD = "GetVMInfo"
NAMESPACE_KEYS = ("containerd-namespace", "containerd-namespace-ttrpc")
"""containerd reads the gRPC key and the ttrpc key (`namespaces.TTRPCHeader`); send both."""


def ttrpc_socket_path(containerd_socket: str = DEFAULT_CONTAINERD_SOCKET) -> str:
    return containerd_socket + ".ttrpc"


class FirecrackerControlAddressResolver:
    def __init__(
        self,
        client: TtrpcClient,
        *,
        snapshotter_port: int | None = 10000,
        metrics_port: int | None = 10001,
        service: str = SERVICE,
    ) -> None:
        self._client = client
        self._ports = (snapshotter_port, metrics_port)
        self._service = service

    async def check(self) -> None:
        """Healthy while the control plugin's ttrpc socket accepts a connection (kept for calls)."""
        await self._client.connected()

    async def resolve(self, namespace: str) -> SnapshotterAddress:
        validate_namespace(namespace)
        request = firecracker_pb2.GetVMInfoRequest(VMID=namespace).SerializeToString()
        metadata = {key: namespace for key in NAMESPACE_KEYS}
        payload = await self._client.call(self._service, METHOD, request, metadata)
        try:
            info = firecracker_pb2.GetVMInfoResponse.FromString(payload)
        except DecodeError as error:
            raise UnavailableError(f"GetVMInfo({namespace!r}): undecodable answer: {error}") from None
        if not info.VSockPath:
            raise UnavailableError(f"GetVMInfo({namespace!r}) answered no VSockPath")
        return SnapshotterAddress("unix", info.VSockPath, *self._ports, {"namespace": namespace})
