"""A SnapshotService (or the demux's relay) served on a unix socket and a gRPC client of it: the wire in a test's hands."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import grpc

from snapmux.adapters.grpc.client import GrpcSnapshotService
from snapmux.adapters.grpc.server import Served, start_unix_snapshots_server


@contextlib.asynccontextmanager
async def served_over_grpc(service: Served, path: str, name: str = "test") -> AsyncIterator[GrpcSnapshotService]:
    """Client -> real grpc.aio server (with the error interceptor) -> `service`; both closed after."""
    server = await start_unix_snapshots_server(service, path)
    channel = grpc.aio.insecure_channel(f"unix://{path}")
    try:
        yield GrpcSnapshotService(channel, name)
    finally:
        await channel.close()
        await server.stop(None)
