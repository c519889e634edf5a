"""Prometheus HTTP service discovery for the per-VM metrics proxies.

`GET /` answers `[{"targets": ["127.0.0.1:<port>"], "labels": {...}}]`, one entry
per proxied VM with the resolver's labels plus `namespace`, and one for the
demux itself, whose own metrics are `/metrics` on this same port (so a single
`http_sd_configs` job scrapes everything). `/healthz` there tells probes whether the demux
serves (see `adapters.http.health`). Label names Prometheus would reject
are rewritten (`vm.id` -> `vm_id`); reserved `__` names are dropped.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping

from snapmux.adapters.http.health import PATH as HEALTH_PATH
from snapmux.adapters.http.health import healthz
from snapmux.adapters.http.messages import Handler, HttpRequest, HttpResponse, error_response, json_response
from snapmux.adapters.http.server import HttpServer
from snapmux.adapters.metrics_proxy.proxy import ProxyTarget, advertised_host, join_host_port
from snapmux.domain.ports import HealthCheck

_INVALID = re.compile(r"[^a-zA-Z0-9_]")
DEMUX_LABELS = {"daemon": "demux-snapshotter"}
VM_LABELS = {"daemon": "cvmfs-snapshotter"}


def label_name(name: str) -> str | None:
    clean = _INVALID.sub("_", name)
    if clean[:1].isdigit():
        clean = "_" + clean
    return None if not clean or clean.startswith("__") else clean


def render(targets: Iterable[ProxyTarget], own_target: str | None = None) -> list[dict[str, object]]:
    """The HTTP SD document: VMs sorted by namespace, then the demux's own endpoint."""
    groups: list[dict[str, object]] = [
        {"targets": [t.target], "labels": _labels({**VM_LABELS, **t.labels, "namespace": t.namespace})}
        for t in sorted(targets, key=lambda t: t.namespace)
    ]
    if own_target:
        groups.append({"targets": [own_target], "labels": dict(DEMUX_LABELS)})
    return groups


def _labels(labels: Mapping[str, str]) -> dict[str, str]:
    clean: dict[str, str] = {}
    for name, value in labels.items():
        key = label_name(name)
        if key is not None:
            clean[key] = str(value)
    return clean


class ServiceDiscoveryServer:
    """The SD endpoint (and the demux's own `/metrics`) on `host:port`, advertising itself once bound."""

    def __init__(
        self,
        targets: Callable[[], Iterable[ProxyTarget]],
        own_metrics: Handler | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 8080,
        advertise_host: str | None = None,
        health: HealthCheck | None = None,
    ) -> None:
        self._targets, self._own_metrics, self._health = targets, own_metrics, health
        self._host, self._port = host, port
        self._advertise = advertise_host or advertised_host(host)
        self._own_target: str | None = None
        self._server = HttpServer(self, name="service-discovery", access_log=False)

    async def start(self) -> int:
        port = await self._server.start_tcp(self._host, self._port)
        if self._own_metrics is not None:
            self._own_target = join_host_port(self._advertise, port)
        return port

    async def stop(self) -> None:
        await self._server.stop(grace=1.0)

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path == "/metrics" and self._own_metrics is not None:
            return await self._own_metrics(request)
        if request.path not in ("/", HEALTH_PATH):
            return error_response(404, f"no such path {request.path!r}; service discovery is at /")
        if request.method not in ("GET", "HEAD"):
            return error_response(405, f"{request.path} is read with GET", (("Allow", "GET, HEAD"),))
        if request.path == HEALTH_PATH:
            return await healthz(self._health)
        return json_response(200, render(self._targets(), self._own_target))
