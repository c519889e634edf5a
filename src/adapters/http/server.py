"""A small, defensive asyncio HTTP/1.1 server.

No HTTP server library is allowed in snapmux, and the endpoints it serves (the
address resolver, Prometheus metrics, service discovery) are tiny GET APIs, so
this implements just enough HTTP/1.1: keep-alive, HEAD, length-delimited bodies.
It is built to survive hostile clients: every malformed request is a 4xx and a
closed connection, the request head must arrive within `header_timeout`
(slowloris), and idle keep-alive connections are dropped after `idle_timeout`.
At most `max_connections` are open: beyond that the oldest idle one is closed to
make room, or, when every one is busy, the newcomer gets a 503 (descriptors are
finite and shared with the daemon's gRPC side).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from http import HTTPStatus

from snapmux.adapters.http.messages import (
    Handler,
    HttpRequest,
    HttpResponse,
    error_response,
    json_response,
)
from snapmux.adapters.http.parsing import (
    BadRequest,
    content_length,
    parse_header_line,
    parse_request_line,
    parse_target,
    wants_keep_alive,
)
from snapmux.adapters.unix_sockets import OWNER_ONLY, SocketAccess, unix_listener

__all__ = ["Handler", "HttpRequest", "HttpResponse", "HttpServer", "error_response", "json_response"]

log = logging.getLogger(__name__)

MAX_REQUEST_LINE = 8192
MAX_HEADER_BYTES = 16384
MAX_HEADERS = 100


class _Close(Exception):
    """The peer went away or timed out while idle: close without answering."""


class HttpServer:
    def __init__(
        self,
        handler: Handler,
        *,
        name: str = "http",
        access_log: bool = True,
        max_request_bytes: int = 64 * 1024,
        header_timeout: float = 10.0,
        idle_timeout: float = 30.0,
        max_connections: int = 1024,
    ) -> None:
        self._handler = handler
        self.name = name
        self._access = logging.getLogger(f"snapmux.access.{name}") if access_log else None
        self._max_body = max_request_bytes
        self._header_timeout = header_timeout
        self._idle_timeout = idle_timeout
        self._max_connections = max_connections
        self._servers: list[asyncio.AbstractServer] = []
        self._busy: set[asyncio.Task] = set()
        self._idle: dict[asyncio.Task, None] = {}  # insertion-ordered: the oldest idle is closed first
        self._closing = False
        self.listening: list[str] = []
        """Where it listens, for logs and tests: `host:port`, `unix:path`, `socket:name`."""

    async def start_tcp(self, host: str, port: int) -> int:
        server = await asyncio.start_server(self._serve, host, port, limit=MAX_REQUEST_LINE + 2)
        self._servers.append(server)
        bound = server.sockets[0].getsockname()
        self.listening.append(f"[{bound[0]}]:{bound[1]}" if ":" in bound[0] else f"{bound[0]}:{bound[1]}")
        return bound[1]

    async def start_unix(self, path: str, access: SocketAccess = OWNER_ONLY) -> None:
        """The socket gets `access`'s mode before anyone can connect (`unix_sockets.bind_unix`)."""
        sock = unix_listener(path, access)
        try:
            server = await asyncio.start_unix_server(self._serve, sock=sock, limit=MAX_REQUEST_LINE + 2)
        except BaseException:
            sock.close()
            raise
        self._servers.append(server)
        self.listening.append(f"unix:{path}")

    async def start_socket(self, sock: socket.socket) -> None:
        """Serve an already bound listening socket (AF_VSOCK, systemd activation, ...)."""
        self._servers.append(await asyncio.start_server(self._serve, sock=sock, limit=MAX_REQUEST_LINE + 2))
        self.listening.append(f"socket:{sock.getsockname()}")

    async def stop(self, grace: float = 5.0) -> None:
        """Stop accepting, let in-flight requests finish within `grace`, drop idle keep-alives."""
        self._closing = True
        for server in self._servers:
            server.close()
        for task in list(self._idle):
            task.cancel()
        if self._busy:
            _, pending = await asyncio.wait(set(self._busy), timeout=grace)
            for task in pending:
                task.cancel()
        remaining = self._busy | set(self._idle)
        if remaining:
            await asyncio.wait(remaining, timeout=1.0)
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        peer = _peer_name(writer)
        if not self._make_room():
            await self._refuse(reader, writer, peer)
            return
        self._idle[task] = None
        try:
            while not self._closing:
                if not await self._one_exchange(reader, writer, task, peer):
                    break
        except (_Close, ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        except Exception:  # noqa: BLE001 - a connection must never take the server down
            log.exception("%s: connection from %s failed", self.name, peer)
        finally:
            self._idle.pop(task, None)
            self._busy.discard(task)
            writer.close()

    def _make_room(self) -> bool:
        """Whether a new connection fits, after closing the oldest idle one if it must."""
        if len(self._idle) + len(self._busy) < self._max_connections:
            return True
        oldest = next(iter(self._idle), None)
        if oldest is None:
            return False
        self._idle.pop(oldest)
        oldest.cancel()
        return True

    async def _refuse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str) -> None:
        """503, then a lingering close: closing over the unread request would reset the
        connection and the client could lose the answer."""
        log.warning("%s: %d connections busy, refusing %s", self.name, len(self._busy), peer)
        try:
            writer.write(_encode(error_response(503, "too many connections"), False, False))
            await writer.drain()
            writer.write_eof()
            async with asyncio.timeout(1.0):
                while await reader.read(MAX_REQUEST_LINE):
                    pass
        except (ConnectionError, TimeoutError):
            pass
        finally:
            writer.close()

    async def _one_exchange(self, reader, writer, task: asyncio.Task, peer: str) -> bool:
        """Reads one request and answers it; returns whether the connection stays open."""
        first = await _first_line(reader, self._idle_timeout)
        self._idle.pop(task, None)
        self._busy.add(task)
        started = time.perf_counter()
        if not first:
            await self._send(writer, None, error_response(414, "request line too long"), False, peer, started, first)
            return False
        try:
            reading = self._read_request(first, reader, writer)
            request, keep_alive = await asyncio.wait_for(reading, self._header_timeout)
        except BadRequest as bad:
            await self._send(writer, None, error_response(bad.status, bad.message), False, peer, started, first)
            return False
        except asyncio.TimeoutError:
            response = error_response(408, "request head not received in time")
            await self._send(writer, None, response, False, peer, started, first)
            return False
        response = await self._dispatch(request)
        keep_alive = keep_alive and not self._closing
        await self._send(writer, request, response, keep_alive, peer, started, first)
        self._busy.discard(task)
        self._idle[task] = None
        return keep_alive

    async def _read_request(self, first: bytes, reader, writer) -> tuple[HttpRequest, bool]:
        method, target, version = parse_request_line(first)
        path, query = parse_target(target)
        headers = await _read_headers(reader)
        body = b""
        length = content_length(headers, self._max_body)
        if length:
            if headers.get("expect", "").lower() == "100-continue":
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            body = await reader.readexactly(length)
        request = HttpRequest(method, path, query, headers, body, target.decode("ascii"))
        return request, wants_keep_alive(version, headers)

    async def _dispatch(self, request: HttpRequest) -> HttpResponse:
        as_get = request.method == "HEAD"
        try:
            if as_get:
                request = HttpRequest("GET", request.path, request.query, request.headers, b"", request.raw_target)
            return await self._handler(request)
        except Exception as error:  # noqa: BLE001 - answered as 500 and logged, never swallowed
            log.exception("%s: handler failed on %s %s", self.name, request.method, ascii(request.raw_target)[:200])
            return error_response(500, f"internal error: {type(error).__name__}")

    async def _send(self, writer, request, response: HttpResponse, keep_alive: bool, peer, started, first) -> None:
        head_only = request is not None and first.startswith(b"HEAD ")
        writer.write(_encode(response, keep_alive, head_only))
        await writer.drain()
        if self._access is not None:
            elapsed_ms = (time.perf_counter() - started) * 1000
            line = ascii(first.rstrip(b"\r\n")[:200].decode("latin-1"))
            self._access.info("%s %s %d %d %.1fms", peer, line, response.status, len(response.body), elapsed_ms)


async def _first_line(reader: asyncio.StreamReader, idle_timeout: float) -> bytes:
    """The request line, skipping the blank lines RFC 9112 2.2 tells servers to ignore."""
    for _ in range(8):
        try:
            line = await asyncio.wait_for(reader.readuntil(b"\n"), idle_timeout)
        except asyncio.LimitOverrunError:
            return b""
        except (asyncio.TimeoutError, asyncio.IncompleteReadError):
            raise _Close() from None
        if line.strip(b"\r\n"):
            return line
    raise _Close()


async def _read_headers(reader: asyncio.StreamReader) -> dict[str, str]:
    headers: dict[str, str] = {}
    total = 0
    for _ in range(MAX_HEADERS + 1):
        try:
            line = await reader.readuntil(b"\n")
        except asyncio.LimitOverrunError:
            raise BadRequest(431, "header line too long") from None
        if line in (b"\r\n", b"\n"):
            return headers
        total += len(line)
        if total > MAX_HEADER_BYTES:
            raise BadRequest(431, "request headers too large")
        parse_header_line(line, headers)
    raise BadRequest(431, "too many request headers")


def _encode(response: HttpResponse, keep_alive: bool, head_only: bool) -> bytes:
    try:
        reason = HTTPStatus(response.status).phrase
    except ValueError:
        reason = "Status"
    lines = [f"HTTP/1.1 {response.status} {reason}"]
    if response.body or response.content_type:
        lines.append(f"Content-Type: {response.content_type}")
    lines.append(f"Content-Length: {len(response.body)}")
    lines.append("Connection: keep-alive" if keep_alive else "Connection: close")
    lines.extend(f"{name}: {_no_crlf(value)}" for name, value in response.headers)
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + response.body


def _no_crlf(value: str) -> str:
    """Header values come from handlers; never let one split the response."""
    return value.replace("\r", " ").replace("\n", " ")


def _peer_name(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer or "local")
