"""One local HTTP listener per VM, forwarding scrapes over the VM's vsock to its metrics port.

Prometheus on the host cannot reach a VM's vsock, so for every remote snapshotter
the demux knows (it listens on the client cache) a proxy opens on the first free
port of `port_range`; the VM going away closes it and frees the port. A full
range leaves that VM unscraped, logged and counted, never a crash: metrics must
not take snapshot calls down with them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from snapmux.adapters.http.messages import HttpRequest, HttpResponse, error_response
from snapmux.adapters.http.server import HttpServer
from snapmux.adapters.metrics_proxy.forward import Streams, forward
from snapmux.adapters.metrics_proxy.port_range import PortAllocator
from snapmux.adapters.vsock.dialer import VsockDialer
from snapmux.domain import metrics as m
from snapmux.domain.model import SnapshotterAddress

log = logging.getLogger(__name__)

PURPOSE = {"purpose": "metrics"}


class MetricsDialer(Protocol):
    """Opens a stream to `port` of the VM behind `address` (hybrid vsock: CONNECT <port>)."""

    async def open(self, address: SnapshotterAddress, port: int) -> Streams: ...


class VsockMetricsDialer:
    """MetricsDialer over Firecracker hybrid vsock: `address.address` is the VM's vsock unix socket."""

    def __init__(self, timeout: float = 5.0) -> None:
        self._timeout = timeout

    async def open(self, address: SnapshotterAddress, port: int) -> Streams:
        sock = await VsockDialer(address.address, port, timeout=self._timeout).dial()
        try:
            return await asyncio.open_connection(sock=sock)
        except BaseException:
            sock.close()
            raise


@dataclass(frozen=True)
class ProxyTarget:
    """What service discovery advertises for one VM."""

    namespace: str
    target: str
    labels: Mapping[str, str]


@dataclass
class _Proxy:
    target: ProxyTarget
    port: int
    server: HttpServer


class MetricsProxies:
    """A client-cache listener (connected/disconnected) owning the per-VM proxy listeners."""

    def __init__(
        self,
        dialer: MetricsDialer,
        allocator: PortAllocator,
        metrics: m.MetricsRegistry,
        *,
        advertise_host: str | None = None,
        scrape_timeout: float = 10.0,
    ) -> None:
        self._dialer, self._allocator, self._metrics = dialer, allocator, metrics
        self._advertise = advertise_host or advertised_host(allocator.host)
        self._timeout = scrape_timeout
        self._proxies: dict[str, _Proxy] = {}
        self._lock = asyncio.Lock()
        metrics.set_gauge(m.METRICS_PROXIES, 0)

    def targets(self) -> list[ProxyTarget]:
        return sorted((p.target for p in self._proxies.values()), key=lambda t: t.namespace)

    async def connected(self, namespace: str, address: SnapshotterAddress) -> None:
        async with self._lock:
            await self._stop(namespace)  # a VM that came back may have a new address
            if address.metrics_port is None:
                log.info("namespace %s reports no metrics port; not proxying its metrics", namespace)
                return
            sock = self._allocator.bind()
            if sock is None:
                self._metrics.count(m.METRICS_PROXY_PORT_EXHAUSTED)
                log.warning("no free port in %s for the metrics proxy of namespace %s", self._allocator.ports, namespace)
                return
            port = sock.getsockname()[1]
            server = HttpServer(self._handler(address), name=f"metrics-proxy-{namespace}", access_log=False)
            try:
                await server.start_socket(sock)
            except BaseException:
                sock.close()
                self._allocator.release(port)
                raise
            labels = {**address.labels, "namespace": namespace}
            self._proxies[namespace] = _Proxy(ProxyTarget(namespace, join_host_port(self._advertise, port), labels), port, server)
            self._metrics.set_gauge(m.METRICS_PROXIES, len(self._proxies))
            log.info("proxying metrics of namespace %s on %s:%d", namespace, self._allocator.host, port)

    async def disconnected(self, namespace: str) -> None:
        async with self._lock:
            await self._stop(namespace)

    async def close(self) -> None:
        async with self._lock:
            for namespace in list(self._proxies):
                await self._stop(namespace)

    async def _stop(self, namespace: str) -> None:
        proxy = self._proxies.pop(namespace, None)
        if proxy is None:
            return
        try:
            await proxy.server.stop(grace=1.0)
        finally:
            self._allocator.release(proxy.port)
            self._metrics.set_gauge(m.METRICS_PROXIES, len(self._proxies))
            log.info("closed the metrics proxy of namespace %s (port %d)", namespace, proxy.port)

    def _handler(self, address: SnapshotterAddress):  # type: ignore[no-untyped-def]
        port = address.metrics_port
        assert port is not None

        async def dial() -> Streams:
            self._metrics.count(m.VSOCK_DIALS, PURPOSE)
            try:
                return await self._dialer.open(address, port)
            except BaseException:
                self._metrics.count(m.VSOCK_DIAL_FAILURES, PURPOSE)
                raise

        async def scrape(request: HttpRequest) -> HttpResponse:
            if request.method not in ("GET", "HEAD"):
                return error_response(405, "metrics are read with GET", (("Allow", "GET, HEAD"),))
            try:
                return await forward(dial, request, self._timeout)
            except Exception as error:  # noqa: BLE001 - dial, timeout, malformed answer: all a 502
                self._metrics.count(m.METRICS_PROXY_SCRAPE_FAILURES)
                log.warning("scrape of %s port %s failed: %r", address.address, port, error)
                return error_response(502, f"cannot reach the VM's metrics endpoint: {error!r}")

        return scrape


def advertised_host(host: str) -> str:
    """A wildcard bind is advertised as loopback: the usual Prometheus runs on the same host."""
    return "127.0.0.1" if host in ("", "0.0.0.0") else "::1" if host == "::" else host


def join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
