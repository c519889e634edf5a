"""AF_VSOCK listening inside a VM (the snapshots API and the metrics endpoint), in one place.

The HTTP server takes the listening socket as it is. grpcio's wheels are built
without vsock support ("VSOCK is not supported" on `vsock:` listen targets) and
offer no way to hand the server a listening fd, so for gRPC we accept on the AF_VSOCK socket ourselves and splice each connection, byte for
byte, to the server's private unix socket. HTTP/2 passes through untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

log = logging.getLogger(__name__)

BUFFER_BYTES = 256 * 1024


def vsock_listener(port: int, cid: int = socket.VMADDR_CID_ANY, backlog: int = 128) -> socket.socket:
    """A listening AF_VSOCK socket (cid ANY: reachable by the host and, where the kernel has loopback, by cid 1)."""
    sock = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
    try:
        sock.bind((cid, port))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(BUFFER_BYTES):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            if writer.can_write_eof():
                writer.write_eof()


class SocketBridge:
    """Accepts on any listening stream socket and forwards each connection to `unix_path`."""

    def __init__(self, listener: socket.socket, unix_path: str) -> None:
        self._listener = listener
        self._unix_path = unix_path
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._listener.setblocking(False)
        self._server = await asyncio.start_server(self._accepted, sock=self._listener)

    async def _accepted(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_unix_connection(self._unix_path)
        except OSError as error:
            log.warning("vsock bridge: cannot reach %s: %s", self._unix_path, error)
            client_writer.close()
            return
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await asyncio.gather(_pump(client_reader, upstream_writer), _pump(upstream_reader, client_writer))
        finally:
            self._tasks.discard(task)  # type: ignore[arg-type]
            for writer in (client_writer, upstream_writer):
                writer.close()

    async def close(self) -> None:
        """Stops accepting; connections still open end when either side closes (the gRPC server stops them)."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
