"""SocketBridge carries real gRPC between a listening socket and the server's private unix socket.

On machines without vsock loopback the AF_VSOCK listener cannot be dialled, so
the bridge is exercised here with an AF_UNIX listener (same code path).
"""

from __future__ import annotations

import socket

import grpc

from snapmux.adapters.grpc.client import GrpcSnapshotService
from snapmux.adapters.grpc.server import start_unix_snapshots_server
from snapmux.adapters.vsock.bridge import SocketBridge
from snapmux.domain.model import Kind
from tests.fakes.snapshots import InMemorySnapshotService


async def test_grpc_calls_and_streams_cross_the_bridge(tmp_path):
    private = str(tmp_path / "private.sock")
    front = str(tmp_path / "front.sock")
    server = await start_unix_snapshots_server(InMemorySnapshotService(), private)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(front)
    listener.listen()
    bridge = SocketBridge(listener, private)
    await bridge.start()
    channel = grpc.aio.insecure_channel(f"unix://{front}")
    try:
        client = GrpcSnapshotService(channel, "x")
        for n in range(150):
            await client.prepare(f"k{n}", "", {"big": "v" * 2000})
        assert (await client.stat("k7")).kind == Kind.ACTIVE
        assert len([info async for info in client.walk()]) == 150
    finally:
        await channel.close()
        await bridge.close()
        await server.stop(None)
