"""A grpc.aio server for containerd's snapshots API on a unix socket (or any gRPC address)."""

from __future__ import annotations

import errno
import os
import socket
import stat
from collections.abc import Sequence

import grpc

from snapmux.adapters.grpc.errors import DomainErrorInterceptor
from snapmux.adapters.grpc.servicer import add_snapshots_servicer
from snapmux.domain.ports import SnapshotService

MAX_MESSAGE_BYTES = 16 * 1024 * 1024

PENDING_CALLS = 1 << 16
"""Calls gRPC core holds until grpc.aio accepts them (its defaults: 1000 soft, 3000 hard)."""

UNACCEPTED_CALL_SECONDS = 24 * 3600
"""gRPC core cancels a call not accepted within this (default 30 s): under a burst of a thousand
Lists the last ones came back CANCELLED. Go's server has no such limit; the caller's deadline is
what bounds a call."""


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
    service: SnapshotService, interceptors: Sequence[grpc.aio.ServerInterceptor] = ()
) -> grpc.aio.Server:
    server = grpc.aio.server(
        interceptors=[*interceptors, DomainErrorInterceptor()],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.server_max_unrequested_time_in_server", UNACCEPTED_CALL_SECONDS),
            ("grpc.server.max_pending_requests", PENDING_CALLS),
            ("grpc.server.max_pending_requests_hard_limit", PENDING_CALLS),
        ],
    )
    add_snapshots_servicer(server, service)
    return server


async def start_unix_snapshots_server(
    service: SnapshotService, path: str, interceptors: Sequence[grpc.aio.ServerInterceptor] = ()
) -> grpc.aio.Server:
    prepare_unix_socket_path(path)
    server = new_snapshots_server(service, interceptors)
    server.add_insecure_port(f"unix://{os.path.abspath(path)}")
    await server.start()
    return server
