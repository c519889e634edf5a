"""Prometheus exposition over the shared HttpServer, and where a daemon listens for scrapes.

Samplers (e.g. snapshots by kind) run on each scrape so gauges are exact when
read; a failing sampler is logged and the scrape still answers with the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from snapmux.adapters.http.messages import Handler, HttpRequest, HttpResponse, error_response
from snapmux.adapters.http.server import HttpServer
from snapmux.adapters.unix_sockets import OWNER_ONLY, SocketAccess
from snapmux.adapters.vsock.bridge import vsock_listener
from snapmux.domain import metrics as m

log = logging.getLogger(__name__)

Sampler = Callable[[], Awaitable[None]]
METRICS_PATH = "/metrics"
VSOCK_PREFIX = "vsock://"


class MetricsEndpoint:
    """`GET /metrics`: the text exposition of one injected CollectorRegistry.

    Samplers get `sample_timeout` each, well inside Prometheus' default 10s scrape timeout,
    so a slow inventory (many active snapshots to size) costs stale gauges, never a failed scrape.
    """

    def __init__(self, registry: CollectorRegistry, samplers: Sequence[Sampler] = (), sample_timeout: float = 5.0):
        self._registry = registry
        self._samplers = list(samplers)
        self._timeout = sample_timeout

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path != METRICS_PATH:
            return error_response(404, f"no such path {request.path!r}; metrics are at {METRICS_PATH}")
        if request.method not in ("GET", "HEAD"):
            return error_response(405, "metrics are read with GET", (("Allow", "GET, HEAD"),))
        await self._sample()
        return HttpResponse(200, generate_latest(self._registry), CONTENT_TYPE_LATEST)

    async def _sample(self) -> None:
        for sampler in self._samplers:
            try:
                await asyncio.wait_for(sampler(), self._timeout)
            except Exception:  # noqa: BLE001 - a scrape answers with what it has
                log.exception("metrics sampler %r failed", sampler)


def with_metrics(handler: Handler, endpoint: Handler) -> Handler:
    """Serves `/metrics` from `endpoint` and everything else from `handler` (e.g. the resolver API)."""

    async def route(request: HttpRequest) -> HttpResponse:
        return await (endpoint if request.path == METRICS_PATH else handler)(request)

    return route


def counting_requests(handler: Handler, metrics: m.MetricsRegistry, server: str) -> Handler:
    """Counts every answer in `snapmux_http_requests_total{server, code}`; a crash counts as 500."""

    async def counted(request: HttpRequest) -> HttpResponse:
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        finally:
            metrics.count(m.HTTP_REQUESTS, {"server": server, "code": str(status)})

    return counted


@dataclass(frozen=True)
class ListenAddress:
    """`host:port` (TCP), `vsock://<port>` (any CID, inside a VM) or `unix:///path`."""

    kind: str
    host: str = ""
    port: int = 0
    path: str = ""

    def __str__(self) -> str:
        if self.kind == "vsock":
            return f"{VSOCK_PREFIX}{self.port}"
        return f"unix://{self.path}" if self.kind == "unix" else f"{self.host}:{self.port}"


def parse_listen_address(text: str) -> ListenAddress:
    """Raises ValueError with what is wrong, so settings validation can report it."""
    if text.startswith(VSOCK_PREFIX):
        return ListenAddress("vsock", port=_port(text[len(VSOCK_PREFIX) :], text, low=0, high=2**32 - 1))
    if text.startswith("unix://"):
        if not text[len("unix://") :].startswith("/"):
            raise ValueError(f"metrics address {text!r}: unix socket path must be absolute")
        return ListenAddress("unix", path=text[len("unix://") :])
    host, colon, port = text.rpartition(":")
    if not colon or not host:
        raise ValueError(f"metrics address {text!r} is not host:port, vsock://<port> or unix:///path")
    return ListenAddress("tcp", host=host.strip("[]"), port=_port(port, text, low=0, high=65535))


def _port(text: str, whole: str, *, low: int, high: int) -> int:
    if not text.isdigit() or not low <= int(text) <= high:
        raise ValueError(f"metrics address {whole!r}: port must be a number in {low}..{high}")
    return int(text)


async def listen(server: HttpServer, address: ListenAddress, access: SocketAccess = OWNER_ONLY) -> str:
    """Starts `server` on `address`; returns where it listens (the bound port when 0 was asked).
    A unix socket gets `access`'s mode; TCP and vsock are reachable by whoever reaches the port."""
    if address.kind == "tcp":
        port = await server.start_tcp(address.host, address.port)
        return str(ListenAddress("tcp", address.host, port))
    if address.kind == "unix":
        await server.start_unix(address.path, access)
        return str(address)
    sock = vsock_listener(address.port, backlog=64)
    try:
        sock.setblocking(False)
        await server.start_socket(sock)
    except BaseException:
        sock.close()
        raise
    return str(address)


async def metrics_server(
    registry: CollectorRegistry,
    address: str | None,
    samplers: Sequence[Sampler] = (),
    name: str = "metrics",
    access: SocketAccess = OWNER_ONLY,
) -> AsyncIterator[str | None]:
    """Serves `/metrics` on `address` until closed (a Resource body); None or "" means off."""
    if not address:
        log.info("metrics endpoint off")
        yield None
        return
    server = HttpServer(MetricsEndpoint(registry, samplers), name=name, access_log=False)
    parsed = parse_listen_address(address)
    where = await listen(server, parsed, access)
    log.info("serving Prometheus metrics on %s/metrics", where)
    try:
        yield where
    finally:
        await server.stop(grace=1.0)
        if parsed.kind == "unix":
            with contextlib.suppress(FileNotFoundError):
                os.unlink(parsed.path)
