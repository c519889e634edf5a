"""The agent's HTTP API and the demux's HttpAddressResolver, over real loopback HTTP."""

from __future__ import annotations

import asyncio
import httpx
import pytest
from dependency_injector import containers, providers

from snapmux.adapters.http.server import HttpResponse, HttpServer, json_response
from snapmux.adapters.resolver.firecracker_control import FirecrackerControlAddressResolver
from snapmux.adapters.resolver.http_api import AddressApi
from snapmux.adapters.resolver.http_client import HttpAddressResolver, http_address_resolver
from snapmux.adapters.resolver.shim_base import ShimBaseAddressResolver
from snapmux.adapters.resolver.static import StaticFileAddressResolver
from snapmux.adapters.ttrpc.client import TtrpcClient
from snapmux.domain.errors import InvalidArgumentError, NotFoundError, UnavailableError
from snapmux.domain.model import SnapshotterAddress
from tests.contract.address_resolver import AddressResolverContract
from tests.fakes.resolver import InMemoryAddressResolver
from tests.fakes.ttrpc_server import FakeTtrpcControlServer
from tests.unit.test_resolver_backends import STATIC, make_vm, write_map


async def serve(handler):
    server = HttpServer(handler, name="test-agent")
    port = await server.start_tcp("127.0.0.1", 0)
    return server, f"http://127.0.0.1:{port}"


@pytest.fixture
async def agent():
    """Starts AddressApi over a given resolver; every server is stopped at teardown."""
    servers = []

    async def start(resolver):
        server, url = await serve(AddressApi(resolver))
        servers.append(server)
        return url

    yield start
    for server in servers:
        await server.stop()


class TestHttpClientOverStaticAgentContract(AddressResolverContract):
    def expected_address(self, namespace):
        return f"/run/{namespace}.vsock"

    @pytest.fixture
    async def resolver(self, agent, tmp_path):
        url = await agent(StaticFileAddressResolver(str(write_map(tmp_path / "m.json", STATIC))))
        async with http_address_resolver(url) as client:
            yield client


async def get(url, target):
    async with httpx.AsyncClient() as client:
        response = await client.get(url + target)
    return response.status_code, response.json(), response.headers


async def test_answer_has_the_documented_shape(agent, tmp_path):
    url = await agent(StaticFileAddressResolver(str(write_map(tmp_path / "m.json", STATIC))))
    status, body, headers = await get(url, "/address?namespace=vm-a")
    assert status == 200 and headers["content-type"] == "application/json"
    assert body == {"network": "unix", "address": "/run/vm-a.vsock", "snapshotter_port": "10000",
                    "metrics_port": "10001", "labels": {"team": "x", "namespace": "vm-a"}}


@pytest.mark.parametrize(
    ("target", "status"),
    [
        ("/address", 400),
        ("/address?namespace=", 400),
        ("/address?namespace=vm-a&namespace=vm-b", 400),
        ("/address?namespace=..%2Fetc", 400),
        ("/address?namespace=%22%22", 400),
        ("/address?namespace=nope", 404),
        ("/address?namespace=%22vm-a%22", 200),
        ("/elsewhere", 404),
        ("/healthz", 200),
    ],
)
async def test_status_codes_and_json_errors(agent, target, status):
    fake = InMemoryAddressResolver({"vm-a": SnapshotterAddress("unix", "/a", 1, 2, {})})
    got, body, _ = await get(await agent(fake), target)
    assert got == status
    assert ("error" in body) == (status >= 400)


async def test_other_methods_are_405_with_allow(agent):
    url = await agent(InMemoryAddressResolver())
    async with httpx.AsyncClient() as client:
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            response = await client.request(method, f"{url}/address?namespace=vm-a")
            assert response.status_code == 405 and response.headers["allow"] == "GET" and response.json()["error"]


async def test_backend_failure_is_503_and_a_backend_bug_is_503_not_500(agent):
    failing = InMemoryAddressResolver()
    failing.failure = UnavailableError("VM agent down")
    status, body, _ = await get(await agent(failing), "/address?namespace=vm-a")
    assert (status, body) == (503, {"error": "VM agent down"})

    class Buggy:
        async def resolve(self, namespace):
            raise KeyError(namespace)

    status, body, _ = await get(await agent(Buggy()), "/address?namespace=vm-a")
    assert status == 503 and "KeyError" in body["error"]


async def test_shim_base_over_http(agent, tmp_path):
    path = make_vm(tmp_path, "vm-a")
    url = await agent(ShimBaseAddressResolver(str(tmp_path)))
    assert (await get(url, "/address?namespace=vm-a"))[1]["address"] == str(path)
    assert (await get(url, "/address?namespace=vm-b"))[0] == 404


async def test_firecracker_control_over_http(agent, tmp_path):
    control = await FakeTtrpcControlServer(str(tmp_path / "c.sock.ttrpc"), {"vm-a": "/fc/a.vsock"}).start()
    client = TtrpcClient(control.path, timeout=0.5)
    try:
        url = await agent(FirecrackerControlAddressResolver(client))
        assert (await get(url, "/address?namespace=vm-a"))[1]["address"] == "/fc/a.vsock"
        assert (await get(url, "/address?namespace=vm-b"))[0] == 404
        control.mode = "silent"
        assert (await get(url, "/address?namespace=vm-a"))[0] == 503
        await control.stop()
        status, body, _ = await get(url, "/address?namespace=vm-a")
        assert status == 503 and body["error"]
    finally:
        await client.close()
        await control.stop()


@pytest.fixture
async def scripted():
    """A fake agent answering whatever the test scripts, to exercise the client's reading."""
    answers: list = []

    async def handler(request):
        answer = answers.pop(0) if answers else (200, {"network": "unix", "address": "/ok"})
        if isinstance(answer, float):
            await asyncio.sleep(answer)
            return json_response(200, {})
        status, body = answer
        if isinstance(body, bytes):
            return HttpResponse(status, body)
        return json_response(status, body)

    server, url = await serve(handler)
    client = HttpAddressResolver(url, timeout=0.3)
    try:
        yield answers, client
    finally:
        await client.aclose()
        await server.stop()


@pytest.mark.parametrize(
    ("answer", "error", "mentions"),
    [
        ((404, {"error": "no VM"}), NotFoundError, "no VM"),
        ((400, {"error": "bad ns"}), InvalidArgumentError, "bad ns"),
        ((500, {"error": "boom"}), UnavailableError, "500"),
        ((503, b"plain text"), UnavailableError, "plain text"),
        ((302, {}), UnavailableError, "302"),
        ((200, b"{not json"), UnavailableError, "not JSON"),
        ((200, ["list"]), UnavailableError, "JSON object"),
        ((200, {"network": "unix"}), UnavailableError, "'address'"),
        ((200, {"address": "/a"}), UnavailableError, "'network'"),
        ((200, {"network": "unix", "address": 5}), UnavailableError, "'address'"),
        ((200, {"network": "unix", "address": "/a", "snapshotter_port": "x"}), UnavailableError, "'snapshotter_port'"),
        ((200, {"network": "unix", "address": "/a", "metrics_port": 0}), UnavailableError, "'metrics_port'"),
        ((200, {"network": "unix", "address": "/a", "metrics_port": True}), UnavailableError, "'metrics_port'"),
        ((200, {"network": "unix", "address": "/a", "labels": []}), UnavailableError, "'labels'"),
        ((200, {"network": "unix", "address": "/a", "labels": {"a": 1}}), UnavailableError, "labels.a"),
        ((200, {"network": "unix", "address": "/a", "labels": {"namespace": "vm-b"}}), UnavailableError, "namespace"),
        (1.0, UnavailableError, "timed out"),
    ],
)
async def test_client_maps_every_bad_answer(scripted, answer, error, mentions):
    answers, client = scripted
    answers.append(answer)
    with pytest.raises(error) as raised:
        await client.resolve("vm-a")
    assert mentions in str(raised.value)
    assert (await client.resolve("vm-a")).address == "/ok"


async def test_client_accepts_ports_as_strings_or_integers(scripted):
    answers, client = scripted
    answers.append((200, {"network": "unix", "address": "/a", "snapshotter_port": "10000", "metrics_port": 10001}))
    address = await client.resolve("vm-a")
    assert (address.snapshotter_port, address.metrics_port, address.labels["namespace"]) == (10000, 10001, "vm-a")


async def test_client_is_a_dependency_injector_resource(scripted):
    answers, client = scripted

    class Demux(containers.DeclarativeContainer):
        resolver = providers.Resource(http_address_resolver, client.base_url, timeout=1.0)

    container = Demux()
    resolver = await container.resolver()
    assert (await resolver.resolve("vm-a")).address == "/ok"
    await container.shutdown_resources()
    assert resolver._client.is_closed


async def test_client_refused_connection_is_unavailable_and_closes(unused_tcp_port):
    async with http_address_resolver(f"http://127.0.0.1:{unused_tcp_port}") as client:
        with pytest.raises(UnavailableError):
            await client.resolve("vm-a")
    assert client._client.is_closed
