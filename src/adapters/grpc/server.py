"""A grpc.aio server for containerd's snapshots API on a unix socket (or any gRPC address)."""

from __future__ import annotations

import errno
import os
import socket
import stat
from collections.abc import Sequence

import grpc

from snapmux.adapters.grpc.errors import DomainErrorInterceptor
from snapmux.adapters.grpc.health import SnapshotsHealth
from snapmux.adapters.grpc.servicer import add_snapshots_servicer
from snapmux.domain.ports import SnapshotService

MAX_MESSAGE_BYTES = 16 * 1024 * 1024


def prepare_unix_socket_path(path: str) -> None:
    """Create the socket's folder 0700 and replace a stale socket; refuse to clobber anything else."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, mode=0o700, exist_ok=True)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FileExistsError(errno.EEXIST, "refusing to replace a non-socket", path)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        os.unlink(path)  # stale: nobody listens
        return
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, "another process is listening on", path)


def grpc_target(address: str) -> str:
    """A listen/dial target for grpc: bare paths are unix sockets."""
    if address.startswith(("unix:", "unix-abstract:", "vsock:")) or ":" in address and not address.startswith("/"):
        return address
    return f"unix://{os.path.abspath(address)}"


def new_snapshots_server(
    service: SnapshotService,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    health: SnapshotsHealth | None = None,
) -> grpc.aio.Server:
    """The snapshots API, and beside it the standard health service when `health` is given."""
    server = grpc.aio.server(
        interceptors=[*interceptors, DomainErrorInterceptor()],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ],
    )
    add_snapshots_servicer(server, service)
    if health is not None:
        health.add_to(server)
    return server


async def start_unix_snapshots_server(
    service: SnapshotService,
    path: str,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    health: SnapshotsHealth | None = None,
) -> grpc.aio.Server:
    prepare_unix_socket_path(path)
    server = new_snapshots_server(service, interceptors, health)
    server.add_insecure_port(f"unix://{os.path.abspath(path)}")
    await server.start()
    return server
