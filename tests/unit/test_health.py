"""Health as probes see it: the gRPC health service beside the snapshots API, `/healthz` on the
resolver (asking its backend) and on the demux's SD port, and sd_notify's datagrams."""

from __future__ import annotations

import os
import socket

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from snapmux.adapters.grpc.client import GrpcSnapshotService
from snapmux.adapters.grpc.convert import SNAPSHOTS_SERVICE
from snapmux.adapters.grpc.health import SnapshotsHealth
from snapmux.adapters.grpc.server import start_unix_snapshots_server
from snapmux.adapters.http.server import HttpServer
from snapmux.adapters.vsock.bridge import SocketBridge
from snapmux.adapters.metrics_proxy.discovery import ServiceDiscoveryServer
from snapmux.adapters.resolver.firecracker_control import FirecrackerControlAddressResolver
from snapmux.adapters.resolver.http_api import AddressApi
from snapmux.adapters.resolver.shim_base import ShimBaseAddressResolver
from snapmux.adapters.resolver.static import StaticFileAddressResolver
from snapmux.adapters.systemd_notify import READY, notify
from snapmux.adapters.ttrpc.client import TtrpcClient
from snapmux.domain.errors import NotFoundError, UnavailableError
from tests.fakes.snapshots import InMemorySnapshotService
from tests.fakes.ttrpc_server import FakeTtrpcControlServer
from tests.unit.test_resolver_backends import STATIC, write_map

Status = health_pb2.HealthCheckResponse


@pytest.fixture
async def served(tmp_path):
    """A snapshots server with health on a temp socket, a health stub and a snapshots client."""
    health, path = SnapshotsHealth(), str(tmp_path / "s.sock")
    server = await start_unix_snapshots_server(InMemorySnapshotService(), path, health=health)
    channel = grpc.aio.insecure_channel(f"unix://{path}")
    try:
        yield health, health_pb2_grpc.HealthStub(channel), channel
    finally:
        await channel.close()
        await server.stop(None)


async def check(stub, service=""):
    return (await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)).status


async def test_not_serving_until_told_then_serving_for_both_names(served):
    health, stub, _ = served
    assert await check(stub, SNAPSHOTS_SERVICE) == Status.NOT_SERVING
    with pytest.raises(UnavailableError, match="not listening yet"):
        await health.check()
    await health.serving()
    assert await check(stub) == await check(stub, SNAPSHOTS_SERVICE) == Status.SERVING
    await health.check()


async def test_an_unknown_service_is_not_found(served):
    _, stub, _ = served
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await check(stub, "no.such.Service")
    assert failed.value.code() == grpc.StatusCode.NOT_FOUND


async def test_watch_sees_serving_then_a_final_not_serving_and_ends(served):
    health, stub, _ = served
    await health.serving()
    watch = stub.Watch(health_pb2.HealthCheckRequest(service=SNAPSHOTS_SERVICE), timeout=10)
    assert (await watch.read()).status == Status.SERVING
    await health.stopping()
    assert (await watch.read()).status == Status.NOT_SERVING
    assert await watch.read() is grpc.aio.EOF  # ended: a watcher never holds the shutdown grace
    await health.serving()  # stopping is final
    assert await check(stub) == Status.NOT_SERVING
    with pytest.raises(UnavailableError, match="shutting down"):
        await health.check()


async def test_an_unknown_service_watch_also_ends_at_shutdown(served):
    health, stub, _ = served
    watch = stub.Watch(health_pb2.HealthCheckRequest(service="other"), timeout=10)
    assert (await watch.read()).status == Status.SERVICE_UNKNOWN
    await health.stopping()
    assert (await watch.read()).status == Status.SERVICE_UNKNOWN
    assert await watch.read() is grpc.aio.EOF


async def test_the_snapshots_api_keeps_its_error_mapping_beside_health(served):
    _, _, channel = served
    with pytest.raises(NotFoundError):
        await GrpcSnapshotService(channel).stat("nope")


async def get(handler, path="/healthz"):
    server = HttpServer(handler, name="test")
    port = await server.start_tcp("127.0.0.1", 0)
    try:
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{port}{path}")
        return response.status_code, response.json()
    finally:
        await server.stop()


async def test_resolver_healthz_follows_the_ttrpc_socket(tmp_path):
    path = str(tmp_path / "containerd.sock.ttrpc")
    client = TtrpcClient(path, timeout=1.0)
    backend = FirecrackerControlAddressResolver(client)
    api = AddressApi(backend, backend)
    try:
        status, body = await get(api)
        assert status == 503 and body["status"] == "unavailable" and path in body["error"]
        control = await FakeTtrpcControlServer(path).start()
        assert await get(api) == (200, {"status": "ok"})
        await control.stop()
        os.unlink(path)
        assert (await get(api))[0] == 503
    finally:
        await client.close()


async def test_resolver_healthz_follows_the_shim_base_directory(tmp_path):
    base = tmp_path / "shim-base"
    backend = ShimBaseAddressResolver(str(base))
    status, body = await get(AddressApi(backend, backend))
    assert status == 503 and body["error"] == f"shim base directory {base} does not exist"
    base.mkdir()
    assert (await get(AddressApi(backend, backend)))[0] == 200
    base.rmdir()
    base.write_text("")
    assert (await get(AddressApi(backend, backend)))[1]["error"].endswith("is not a directory")


async def test_resolver_healthz_follows_the_static_file(tmp_path):
    path = tmp_path / "m.json"
    backend = StaticFileAddressResolver(str(path))
    status, body = await get(AddressApi(backend, backend))
    assert status == 503 and body["error"] == f"address file {path} cannot be used: No such file or directory"
    write_map(path, STATIC)
    assert (await get(AddressApi(backend, backend)))[0] == 200
    path.write_text("{not json")
    status, body = await get(AddressApi(backend, backend))
    assert status == 503 and body["error"].endswith("; the last good map still answers")
    assert (await get(AddressApi(backend, backend), "/address?namespace=vm-a"))[0] == 200


async def test_resolver_healthz_without_a_check_and_with_a_buggy_one():
    class Buggy:
        async def check(self):
            raise RuntimeError("boom")

    assert (await get(AddressApi(StaticFileAddressResolver("/nonexistent"))))[0] == 200
    status, body = await get(AddressApi(StaticFileAddressResolver("/nonexistent"), Buggy()))
    assert status == 503 and body["error"] == "health check failed: boom"


async def test_demux_sd_port_answers_healthz_from_the_serving_state():
    health = SnapshotsHealth()
    discovery = ServiceDiscoveryServer(list, port=0, health=health)
    port = await discovery.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            answers = [await client.get("/healthz")]
            await health.serving()
            answers.append(await client.get("/healthz"))
            await health.stopping()
            answers.append(await client.get("/healthz"))
            answers.append(await client.post("/healthz"))
    finally:
        await discovery.stop()
    assert [a.status_code for a in answers] == [503, 200, 503, 405]
    assert answers[2].json() == {"status": "unavailable", "error": "shutting down"}


def test_notify_sends_one_datagram_to_a_path_or_an_abstract_socket(tmp_path):
    for address, bound in ((str(tmp_path / "notify"), str(tmp_path / "notify")), ("@snapmux-test-%d" % os.getpid(), None)):
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
            listener.bind(bound or "\0" + address[1:])
            assert notify(READY, {"NOTIFY_SOCKET": address})
            assert listener.recv(64) == b"READY=1"


def test_notify_without_systemd_sends_nothing_and_a_dead_socket_is_not_fatal(tmp_path):
    assert not notify(READY, {})
    assert not notify(READY, {"NOTIFY_SOCKET": str(tmp_path / "nobody")})


async def test_health_crosses_the_vsock_bridge_up_to_the_final_not_serving(tmp_path):
    """The bridge forwards the same server (an AF_UNIX listener stands in for AF_VSOCK, same code)."""
    health, private, front = SnapshotsHealth(), str(tmp_path / "private.sock"), str(tmp_path / "front.sock")
    server = await start_unix_snapshots_server(InMemorySnapshotService(), private, health=health)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(front)
    listener.listen()
    bridge = SocketBridge(listener, private)
    await bridge.start()
    await health.serving()
    channel = grpc.aio.insecure_channel(f"unix://{front}")
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        assert await check(stub, SNAPSHOTS_SERVICE) == Status.SERVING
        watch = stub.Watch(health_pb2.HealthCheckRequest(), timeout=10)
        assert (await watch.read()).status == Status.SERVING
        await health.stopping()  # before the bridge closes, as the daemon's shutdown does
        assert (await watch.read()).status == Status.NOT_SERVING
    finally:
        await channel.close()
        await bridge.close()
        await server.stop(None)
