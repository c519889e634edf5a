"""Composition root of http-address-resolver: settings -> backend -> HTTP API -> server.

The validated `ResolverSettings` object is the container's one dependency, as in the other two
daemons: each provider reads its typed field, and the backend is chosen by `settings.backend`."""

from __future__ import annotations

from collections.abc import AsyncIterator

from dependency_injector import containers, providers
from prometheus_client import CollectorRegistry

from snapmux.adapters.http.server import Handler, HttpServer
from snapmux.adapters.prometheus.http import MetricsEndpoint, counting_requests, with_metrics
from snapmux.adapters.prometheus.registry import PrometheusMetricsRegistry
from snapmux.adapters.resolver.firecracker_control import FirecrackerControlAddressResolver, ttrpc_socket_path
from snapmux.adapters.resolver.http_api import AddressApi
from snapmux.adapters.resolver.shim_base import ShimBaseAddressResolver
from snapmux.adapters.resolver.static import StaticFileAddressResolver
from snapmux.adapters.ttrpc.client import TtrpcClient
from snapmux.application.metrics_demux import MeasuredAddressResolver
from snapmux.entrypoints.lifecycle import listening_on
from snapmux.entrypoints.http_address_resolver.settings import ResolverSettings, split_address


async def ttrpc_client(containerd_socket: str, timeout: float) -> AsyncIterator[TtrpcClient]:
    """Dials lazily on first call, so creating it costs nothing; closing drops the connection."""
    client = TtrpcClient(ttrpc_socket_path(containerd_socket), timeout=timeout)
    try:
        yield client
    finally:
        await client.close()


def measured_api(api: Handler, registry: CollectorRegistry, metrics: PrometheusMetricsRegistry) -> Handler:
    """The API plus `GET /metrics`; every answer counted by status in snapmux_http_requests_total."""
    return counting_requests(with_metrics(api, MetricsEndpoint(registry)), metrics, "http-address-resolver")


async def http_server(handler: Handler, address: str, access_log: bool, grace: float) -> AsyncIterator[HttpServer]:
    server = HttpServer(handler, name="http-address-resolver", access_log=access_log)
    host, port = split_address(address)
    with listening_on(address):
        await server.start_tcp(host, port)
    try:
        yield server
    finally:
        await server.stop(grace)


class Container(containers.DeclarativeContainer):
    settings = providers.Dependency(instance_of=ResolverSettings)

    ttrpc = providers.Resource(
        ttrpc_client,
        containerd_socket=settings.provided.firecracker_control.containerd_socket,
        timeout=settings.provided.firecracker_control.timeout_seconds,
    )

    resolver = providers.Selector(
        settings.provided.backend,
        **{
            "firecracker-control": providers.Singleton(
                FirecrackerControlAddressResolver,
                ttrpc,
                snapshotter_port=settings.provided.snapshotter_port,
                metrics_port=settings.provided.metrics_port,
                service=settings.provided.firecracker_control.service,
            ),
            "shim-base": providers.Singleton(
                ShimBaseAddressResolver,
                settings.provided.shim_base.dir,
                containerd_namespace=settings.provided.shim_base.containerd_namespace,
                snapshotter_port=settings.provided.snapshotter_port,
                metrics_port=settings.provided.metrics_port,
                cache_ttl=settings.provided.shim_base.cache_ttl_seconds,
            ),
            "static": providers.Singleton(
                StaticFileAddressResolver,
                settings.provided.static.path,
                snapshotter_port=settings.provided.snapshotter_port,
                metrics_port=settings.provided.metrics_port,
            ),
        },
    )

    registry = providers.Singleton(CollectorRegistry)

    metrics = providers.Singleton(PrometheusMetricsRegistry, registry)

    # /healthz asks the backend itself (each has a `check`), not the measured decorator
    api = providers.Singleton(AddressApi, providers.Singleton(MeasuredAddressResolver, resolver, metrics), resolver)

    handler = providers.Singleton(measured_api, api, registry, metrics)

    server = providers.Resource(
        http_server,
        handler=handler,
        address=settings.provided.address,
        access_log=settings.provided.access_log,
        grace=settings.provided.shutdown_grace_seconds,
    )
