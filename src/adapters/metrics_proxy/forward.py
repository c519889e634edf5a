"""Forwards one scrape to a VM's metrics endpoint over a dialed stream (hybrid vsock).

The far side is our own HttpServer inside the VM, but this still reads any
HTTP/1.x answer (Content-Length, chunked, or close-delimited) so a different
exporter on `metrics_port` works too. One connection per scrape, `Connection:
close`: scrapes are seconds apart and a VM may go away between them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from snapmux.adapters.http.messages import HttpRequest, HttpResponse

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]
Dial = Callable[[], Awaitable[Streams]]
"""Opens a fresh stream to the VM's metrics port (e.g. VsockDialer's CONNECT handshake)."""

MAX_RESPONSE_BYTES = 32 * 1024 * 1024
FORWARDED_HEADERS = ("accept",)
"""Accept lets Prometheus negotiate OpenMetrics with the VM; encodings are not forwarded."""


class UpstreamError(Exception):
    """The VM's answer could not be read; the proxy answers 502."""


async def forward(dial: Dial, request: HttpRequest, timeout: float) -> HttpResponse:
    """The VM's answer to `request`, or UpstreamError/OSError/TimeoutError."""
    reader, writer = await asyncio.wait_for(dial(), timeout)
    try:
        return await asyncio.wait_for(_exchange(reader, writer, request), timeout)
    finally:
        writer.close()


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: HttpRequest) -> HttpResponse:
    head = [f"GET {request.raw_target} HTTP/1.1", "Host: localhost", "Connection: close"]
    head += [f"{name}: {request.headers[name]}" for name in FORWARDED_HEADERS if name in request.headers]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
    await writer.drain()
    status, headers = await _read_head(reader)
    body = await _read_body(reader, headers)
    content_type = headers.get("content-type", "text/plain; version=0.0.4; charset=utf-8")
    return HttpResponse(status, body, content_type)


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    parts = (await reader.readline()).decode("latin-1").split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise UpstreamError("the VM did not answer with HTTP")
    headers: dict[str, str] = {}
    for _ in range(100):
        line = (await reader.readline()).decode("latin-1").rstrip("\r\n")
        if not line:
            return int(parts[1]), headers
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    raise UpstreamError("the VM's answer has too many headers")


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return await _read_chunked(reader)
    length = headers.get("content-length")
    if length is not None:
        if not length.isdigit() or int(length) > MAX_RESPONSE_BYTES:
            raise UpstreamError(f"bad or oversized Content-Length {length[:20]!r} from the VM")
        return await reader.readexactly(int(length))
    body = await reader.read(MAX_RESPONSE_BYTES + 1)
    while len(body) <= MAX_RESPONSE_BYTES and (more := await reader.read(MAX_RESPONSE_BYTES + 1 - len(body))):
        body += more
    if len(body) > MAX_RESPONSE_BYTES:
        raise UpstreamError("the VM's answer is too large")
    return body


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size_line = (await reader.readline()).split(b";")[0].strip()
        try:
            size = int(size_line, 16)
        except ValueError:
            raise UpstreamError("malformed chunk from the VM") from None
        if size == 0:
            return bytes(body)
        if len(body) + size > MAX_RESPONSE_BYTES:
            raise UpstreamError("the VM's answer is too large")
        body += await reader.readexactly(size)
        await reader.readexactly(2)
