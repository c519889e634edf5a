"""A grpc.aio server for containerd's snapshots API on a unix socket (or any gRPC address)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Sequence

import grpc

from snapmux.adapters.grpc.call_log import CallLogInterceptor
from snapmux.adapters.grpc.errors import DomainErrorInterceptor
from snapmux.adapters.grpc.health import SnapshotsHealth
from snapmux.adapters.grpc.method_wrapping import add_wrapped
from snapmux.adapters.grpc.relay_servicer import SnapshotsRelayServicer
from snapmux.adapters.grpc.servicer import add_snapshots_servicer
from snapmux.adapters.unix_sockets import OWNER_ONLY, SocketAccess, bind_unix
from snapmux.domain.ports import SnapshotService

MAX_MESSAGE_BYTES = 16 * 1024 * 1024

PENDING_CALLS = 1 << 16
"""Calls gRPC core holds until grpc.aio accepts them (its defaults: 1000 soft, 3000 hard)."""

UNACCEPTED_CALL_SECONDS = 24 * 3600
"""gRPC core cancels a call not accepted within this (default 30 s): under a burst of a thousand
Lists the last ones came back CANCELLED. Go's server has no such limit; the caller's deadline is
what bounds a call."""

SHUTDOWN_GRACE_SECONDS = 30.0
"""In-flight calls get this long to finish on SIGTERM before they are cancelled."""


Served = SnapshotService | SnapshotsRelayServicer
"""What answers the snapshots API: a port behind the domain servicer, or the demux's relay."""


def new_snapshots_server(
    service: Served,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    health: SnapshotsHealth | None = None,
    caller_context: bool = True,
) -> grpc.aio.Server:
    """The snapshots API, and beside it the standard health service when `health` is given. The call
    log (outermost) and the error mapping wrap each snapshots method's handler; `interceptors`
    are grpc.aio's, run before any handler is found (none by default: they cost every call).
    `caller_context`: whether the port hears the caller's namespace and deadline (`DomainErrorInterceptor`)."""
    server = grpc.aio.server(
        interceptors=list(interceptors) or None,
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.server_max_unrequested_time_in_server", UNACCEPTED_CALL_SECONDS),
            ("grpc.server.max_pending_requests", PENDING_CALLS),
            ("grpc.server.max_pending_requests_hard_limit", PENDING_CALLS),
        ],
    )
    wrappers = [CallLogInterceptor(), DomainErrorInterceptor(caller_context)]
    if isinstance(service, SnapshotsRelayServicer):
        add_wrapped(server, SnapshotsRelayServicer.add_to, service, wrappers)
    else:
        add_snapshots_servicer(server, service, wrappers)
    if health is not None:
        health.add_to(server)
    return server


async def start_unix_snapshots_server(
    service: Served,
    path: str,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    access: SocketAccess = OWNER_ONLY,
    health: SnapshotsHealth | None = None,
    caller_context: bool = True,
) -> grpc.aio.Server:
    """gRPC binds (and listens) in add_insecure_port, so that happens in a private directory;
    the socket reaches `path` with its mode set (`unix_sockets.bind_unix`). A stale socket is
    replaced; anything else at `path`, or a live listener, is refused."""
    server = new_snapshots_server(service, interceptors, health, caller_context)
    try:
        bind_unix(path, access, lambda staged: server.add_insecure_port(f"unix://{staged}"))
    except RuntimeError as error:  # grpc's "Failed to bind to address ..."
        await server.stop(None)
        raise OSError(f"cannot listen on {path}: {error}".split(";")[0]) from None
    except BaseException:
        await server.stop(None)
        raise
    await server.start()
    return server


async def unix_snapshots_server(
    service: Served,
    path: str,
    access: SocketAccess = OWNER_ONLY,
    health: SnapshotsHealth | None = None,
    caller_context: bool = True,
) -> AsyncIterator[grpc.aio.Server]:
    """Serves as `start_unix_snapshots_server` says until closed (a Resource body). Closing stops
    the server first, in-flight calls getting SHUTDOWN_GRACE_SECONDS, and only then unlinks the
    socket: a call made during the grace still reaches a server that answers it."""
    server = await start_unix_snapshots_server(service, path, access=access, health=health,
                                               caller_context=caller_context)
    try:
        yield server
    finally:
        await server.stop(SHUTDOWN_GRACE_SECONDS)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
