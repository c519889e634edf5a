"""A local unix socket per VM whose every connection becomes one vsock dial, spliced both ways.

Why: grpcio has no custom dialer, and Firecracker's hybrid vsock needs a text
handshake before the byte stream. So gRPC dials a private local socket (a
`unix:` target, never a host name) and the forwarder performs the handshake per
connection. gRPC's own reconnects therefore re-dial the VM, which is how a VM
that restarts behind the same socket is picked up again.

The splice is two asyncio Protocols writing into each other's transports, with
backpressure (pause_writing on one side pauses reading on the other): no copies
through Python streams, no per-chunk tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket

from snapmux.adapters.unix_sockets import unix_listener
from snapmux.adapters.vsock.dialer import VsockDialer
from snapmux.domain.errors import DomainError

log = logging.getLogger(__name__)


class _Half(asyncio.Protocol):
    """One side of a spliced pair: what it receives goes to its peer's transport."""

    def __init__(self, on_lost=None, on_hangup=None, on_made=None) -> None:  # type: ignore[no-untyped-def]
        self.transport: asyncio.Transport | None = None
        self.peer: _Half | None = None
        self.pending: list[bytes] = []  # received before the pair existed
        self.on_lost = on_lost
        self.on_hangup = on_hangup  # this side ended the pair first
        self.on_made = on_made

    def _peer_open(self) -> bool:
        return self.peer is not None and self.peer.transport is not None and not self.peer.transport.is_closing()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.on_made is not None:
            self.on_made(self)

    def data_received(self, data: bytes) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.write(data)
        else:
            self.pending.append(data)

    def eof_received(self) -> bool:
        if self.on_hangup is not None and self._peer_open():
            self.on_hangup()
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()  # flushes what is buffered, then closes
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.on_hangup is not None and exc is not None and self._peer_open():
            self.on_hangup()
        if self.on_lost is not None:
            self.on_lost(self)
        peer, self.peer = self.peer, None
        if peer is not None and peer.transport is not None:
            peer.peer = None
            peer.transport.close()

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()


class VsockForwarder:
    def __init__(self, dialer: VsockDialer, path: str) -> None:
        self.dialer = dialer
        self.path = path
        self.last_failure: str | None = None
        self._server: asyncio.AbstractServer | None = None
        self._halves: set[_Half] = set()
        self._dials: set[asyncio.Task[None]] = set()
        self._spare: list[socket.socket] = []

    def adopt(self, sock: socket.socket) -> None:
        """Use an already dialled socket (the connector's probe) for the next connection."""
        self._spare.append(sock)

    @property
    def target(self) -> str:
        return f"unix://{os.path.abspath(self.path)}"

    async def start(self) -> VsockForwarder:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        sock = unix_listener(self.path)  # 0600 from the start: only the demux's own gRPC client dials it
        try:
            self._server = await asyncio.get_running_loop().create_unix_server(self._accepted, sock=sock)
        except BaseException:
            sock.close()
            raise
        return self

    def _accepted(self) -> _Half:
        local = _Half(self._halves.discard, on_made=self._made)
        self._halves.add(local)
        return local

    def _made(self, local: _Half) -> None:
        """Dial from connection_made itself: no guess about when a loop calls it after the factory."""
        assert local.transport is not None
        local.transport.pause_reading()  # gRPC's bytes wait (in `pending` at most) for the VM end
        task = asyncio.get_running_loop().create_task(self._connect(local))
        self._dials.add(task)
        task.add_done_callback(self._dials.discard)

    async def _connect(self, local: _Half) -> None:
        assert local.transport is not None
        try:
            sock = self._spare.pop() if self._spare else await self.dialer.dial()
        except DomainError as error:
            self.last_failure = str(error)
            log.warning("%s", error)
            local.transport.abort()
            return
        except Exception as error:  # noqa: BLE001 - never leave gRPC hanging on a half-made pair
            self.last_failure = f"{self.dialer}: {type(error).__name__}: {error}"
            log.exception("dialling %s failed", self.dialer)
            local.transport.abort()
            return
        self.last_failure = None
        await self._splice(local, sock)

    async def _splice(self, local: _Half, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        remote = _Half(self._halves.discard, self._vm_hung_up)
        try:
            await loop.connect_accepted_socket(lambda: remote, sock)
        except OSError:
            sock.close()
            assert local.transport is not None
            local.transport.abort()
            return
        self._halves.add(remote)
        if local.transport is None or local.transport.is_closing():
            remote.transport.close()  # type: ignore[union-attr]
            return
        if _pair(local, remote):
            self._vm_hung_up()

    def _vm_hung_up(self) -> None:
        # gRPC never closes first from the VM side in normal operation: name the failure
        self.last_failure = f"{self.dialer}: connection closed by the VM"

    async def close(self) -> None:
        """Stop accepting, cut every live pair, remove the socket."""
        if self._server is not None:
            self._server.close()
        for task in list(self._dials):
            task.cancel()
        await asyncio.gather(*self._dials, return_exceptions=True)
        for sock in self._spare:
            sock.close()
        self._spare.clear()
        for half in list(self._halves):
            if half.transport is not None:
                half.transport.abort()
        self._halves.clear()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def _pair(local: _Half, remote: _Half) -> bool:
    """Join the halves, first passing on what either received before the pair existed.

    The VM speaks first (HTTP/2 SETTINGS, already waiting on a probed socket): a loop
    may deliver it before connect_accepted_socket returns (uvloop does). Dropping it left
    gRPC waiting for the server preface until it gave up and reconnected: a second dial.
    Returns whether the VM had already hung up.
    """
    assert local.transport is not None and remote.transport is not None
    local.peer, remote.peer = remote, local
    for half, other in ((local, remote), (remote, local)):
        for data in half.pending:
            other.transport.write(data)  # type: ignore[union-attr]
        half.pending.clear()
    if remote.transport.is_closing():
        local.transport.close()  # flushes what the VM said, then ends gRPC's side too
        return True
    local.transport.resume_reading()
    return False
