"""Dial a guest's AF_VSOCK port through Firecracker's hybrid vsock unix socket.

The handshake (Firecracker docs/vsock.md): connect to the device's unix socket,
write `CONNECT <port>\\n`, read `OK <host_port>\\n`. The ack is read one byte at a
time so that nothing the guest sends right after it is swallowed: the returned
socket carries the guest's stream from its first byte.

While the VM's agent is still starting, Firecracker closes the connection (no
guest listener yet), the ack may be slow, or the backlog is full (EAGAIN): those
are retried every `retry_interval`. A missing socket (ENOENT) or nobody behind it
(ECONNREFUSED) means no VM: no retry. The whole dial is bounded by `timeout`.
"""

from __future__ import annotations

import asyncio
import errno
import re
import socket
import time

from snapmux.domain.errors import UnavailableError

_ACK = re.compile(rb"^OK (\d{1,10})\n$")
_MAX_ACK_BYTES = 32
_FATAL = (errno.ENOENT, errno.ECONNREFUSED, errno.ENOTDIR, errno.EACCES)


class _Retry(Exception):
    """This attempt failed in a way a starting VM explains; try again."""


class _AckTimeout(_Retry):
    """No answer within this attempt's budget."""


class VsockDialer:
    def __init__(
        self,
        uds_path: str,
        port: int,
        timeout: float = 5.0,
        retry_interval: float = 0.1,
        ack_timeout: float = 1.0,
    ) -> None:
        self.uds_path = uds_path
        self.port = port
        self.timeout = timeout
        self.retry_interval = retry_interval
        self.ack_timeout = ack_timeout

    def __str__(self) -> str:
        return f"vsock {self.uds_path} port {self.port}"

    async def dial(self) -> socket.socket:
        """A connected, non-blocking socket to the guest's listener, or UnavailableError."""
        deadline = time.monotonic() + self.timeout
        last = "no attempt"
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise UnavailableError(f"cannot connect to {self} within {self.timeout:g}s: {last}")
            budget = min(remaining, self.ack_timeout)
            try:
                return await self._attempt(budget)
            except _AckTimeout as timeout:
                if budget >= self.ack_timeout or last == "no attempt":
                    last = str(timeout)  # one cut short by the deadline says less than the refusal before it
            except _Retry as retry:
                last = str(retry)
            await asyncio.sleep(max(0.0, min(self.retry_interval, deadline - time.monotonic())))

    async def _attempt(self, ack_timeout: float) -> socket.socket:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            try:
                await loop.sock_connect(sock, self.uds_path)
            except OSError as error:
                if error.errno in _FATAL:
                    raise UnavailableError(f"cannot connect to {self}: {error.strerror or error}") from None
                raise _Retry(f"connect: {error.strerror or error}") from None
            try:
                await loop.sock_sendall(sock, b"CONNECT %d\n" % self.port)
                await asyncio.wait_for(self._read_ack(sock), ack_timeout)
            except asyncio.TimeoutError:
                raise _AckTimeout(f"no OK within {ack_timeout:g}s") from None
            except OSError as error:  # reset or broken pipe: Firecracker dropped us mid-handshake
                raise _Retry(f"handshake: {error.strerror or error}") from None
            return sock
        except BaseException:
            sock.close()
            raise

    async def _read_ack(self, sock: socket.socket) -> int:
        loop = asyncio.get_running_loop()
        line = b""
        while not line.endswith(b"\n"):
            byte = await loop.sock_recv(sock, 1)
            if not byte:
                raise _Retry("connection closed before OK (is the guest listening on the port?)")
            line += byte
            if len(line) > _MAX_ACK_BYTES:
                raise UnavailableError(f"{self}: not a Firecracker vsock socket (answer {line[:40]!r})")
        found = _ACK.match(line)
        if found is None:
            raise UnavailableError(f"{self}: unexpected handshake answer {line!r}")
        return int(found.group(1))
