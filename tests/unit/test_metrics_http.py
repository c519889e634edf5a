"""Serving metrics over HTTP: the endpoint, samplers on scrape, request counting, listen addresses."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry

from snapmux.adapters.http.messages import HttpResponse, json_response
from snapmux.adapters.http.server import HttpServer
from snapmux.adapters.prometheus.http import (
    ListenAddress,
    MetricsEndpoint,
    counting_requests,
    listen,
    parse_listen_address,
    with_metrics,
)
from snapmux.adapters.prometheus.registry import PrometheusMetricsRegistry
from snapmux.application.metrics import SnapshotInventory
from snapmux.domain import metrics as m
from tests.fakes.metrics import InMemoryMetricsRegistry
from tests.fakes.snapshots import InMemorySnapshotService


@pytest.fixture
async def serve():
    servers = []

    async def start(handler) -> httpx.AsyncClient:
        server = HttpServer(handler, access_log=False)
        port = await listen(server, parse_listen_address("127.0.0.1:0"))
        servers.append(server)
        return httpx.AsyncClient(base_url=f"http://{port}", timeout=10)

    yield start
    for server in servers:
        await server.stop()


async def test_a_scrape_samples_first_then_exposes_the_registry(serve):
    registry = CollectorRegistry()
    snapshots = InMemorySnapshotService()
    await snapshots.prepare("a")
    inventory = SnapshotInventory(snapshots, PrometheusMetricsRegistry(registry))
    async with await serve(MetricsEndpoint(registry, [inventory.sample])) as client:
        first = await client.get("/metrics")
        await snapshots.prepare("b")
        second = await client.get("/metrics")
    assert first.status_code == 200 and first.headers["content-type"] == CONTENT_TYPE_LATEST
    assert 'snapmux_snapshots{kind="active"} 1.0' in first.text
    assert 'snapmux_snapshots{kind="active"} 2.0' in second.text


async def test_a_failing_sampler_does_not_fail_the_scrape(serve):
    registry = CollectorRegistry()
    PrometheusMetricsRegistry(registry).set_gauge(m.REMOTE_CLIENTS, 3)

    async def broken():
        raise RuntimeError("walk failed")

    async with await serve(MetricsEndpoint(registry, [broken])) as client:
        response = await client.get("/metrics")
    assert response.status_code == 200 and "snapmux_remote_clients 3.0" in response.text


async def test_other_paths_and_methods_are_refused(serve):
    async with await serve(MetricsEndpoint(CollectorRegistry())) as client:
        assert (await client.get("/")).status_code == 404
        assert (await client.post("/metrics")).status_code == 405


async def test_requests_are_counted_by_status_and_metrics_routed(serve):
    registry = CollectorRegistry()
    metrics = PrometheusMetricsRegistry(registry)

    async def api(request) -> HttpResponse:
        if request.path == "/boom":
            raise RuntimeError("bug")
        return json_response(200 if request.path == "/ok" else 404, {})

    handler = counting_requests(with_metrics(api, MetricsEndpoint(registry)), metrics, "resolver")
    async with await serve(handler) as client:
        await client.get("/ok")
        await client.get("/ok")
        await client.get("/nope")
        await client.get("/boom")
        text = (await client.get("/metrics")).text
    count = lambda code: registry.get_sample_value("snapmux_http_requests_total", {"server": "resolver", "code": code})
    assert (count("200"), count("404"), count("500")) == (3, 1, 1)
    assert 'snapmux_http_requests_total{code="200",server="resolver"} 2.0' in text


@pytest.mark.parametrize(
    "text, parsed",
    [
        ("127.0.0.1:9101", ListenAddress("tcp", "127.0.0.1", 9101)),
        ("[::1]:9101", ListenAddress("tcp", "::1", 9101)),
        ("vsock://10001", ListenAddress("vsock", port=10001)),
        ("unix:///run/m.sock", ListenAddress("unix", path="/run/m.sock")),
    ],
)
def test_listen_addresses(text, parsed):
    assert parse_listen_address(text) == parsed


@pytest.mark.parametrize("text", ["9101", ":9101", "host:x", "host:70000", "vsock://", "vsock://x", "unix://rel"])
def test_bad_listen_addresses_say_what_is_wrong(text):
    with pytest.raises(ValueError, match="metrics address"):
        parse_listen_address(text)


def test_fake_and_real_registry_agree_on_http_counts():
    fake = InMemoryMetricsRegistry()
    fake.count(m.HTTP_REQUESTS, {"server": "resolver", "code": "200"})
    assert fake.sample("snapmux_http_requests_total", {"server": "resolver", "code": "200"}) == 1
