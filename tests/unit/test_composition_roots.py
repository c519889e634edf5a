"""The three daemons are composed one way: a container fed the validated settings object, the
resolver client and the gRPC server's stop each written once and shared."""

from __future__ import annotations

import ast
import os
import socket
import tempfile
from pathlib import Path

import grpc
import pytest
from dependency_injector import errors

from snapmux.adapters.grpc import server as grpc_server
from snapmux.adapters.resolver.http_client import HttpAddressResolver
from snapmux.adapters.resolver.static import StaticFileAddressResolver
from snapmux.entrypoints.cvmfs_snapshotter.container import Container as CvmfsContainer
from snapmux.entrypoints.demux_snapshotter.container import Container as DemuxContainer
from snapmux.entrypoints.demux_snapshotter.settings import DemuxSettings
from snapmux.entrypoints.http_address_resolver.container import Container as ResolverContainer
from snapmux.entrypoints.http_address_resolver.settings import load_settings as resolver_settings
from tests.fakes.snapshots import InMemorySnapshotService

ENTRYPOINTS = Path(__file__).resolve().parents[2] / "src" / "entrypoints"


@pytest.mark.parametrize("container", [CvmfsContainer, DemuxContainer, ResolverContainer])
def test_each_container_takes_its_validated_settings_object_and_nothing_else(container):
    with pytest.raises(errors.Error, match="instance of"):
        container(settings={"address": "127.0.0.1:0"}).settings()  # a dict (model_dump()) has lost the types


def test_no_entrypoint_wires_the_container_into_a_module():
    """`serve` takes what it needs from the container: no @inject, Provide[...] or wire() left."""
    wiring = []
    for path in ENTRYPOINTS.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "dependency_injector.wiring":
                wiring.append(str(path.relative_to(ENTRYPOINTS)))
            if isinstance(node, ast.Attribute) and node.attr in ("wire", "unwire"):
                wiring.append(f"{path.relative_to(ENTRYPOINTS)}:{node.lineno}")
    assert wiring == []


def test_the_resolver_backend_is_chosen_from_the_typed_settings(tmp_path):
    static = tmp_path / "static.json"
    static.write_text("{}")
    settings = resolver_settings(address="127.0.0.1:0", backend="static", static={"path": str(static)})
    resolver = ResolverContainer(settings=settings).resolver()  # builds no ttrpc client: no resource to close
    assert isinstance(resolver, StaticFileAddressResolver)


async def test_the_demux_resolver_is_the_adapters_resource_and_closes_its_client():
    settings = DemuxSettings.model_validate(
        {"snapshotter": {"proxy": {"address": {"resolver": {"address": "http://127.0.0.1:1/", "timeout": 0.5}}}}}
    )
    container = DemuxContainer(settings=settings)
    resolver = await container.resolver.init()
    assert isinstance(resolver, HttpAddressResolver)
    assert (resolver.base_url, resolver._client.timeout.read) == ("http://127.0.0.1:1", 0.5)
    await container.resolver.shutdown()
    assert resolver._client.is_closed


async def test_a_snapshots_server_stops_with_the_grace_before_its_socket_is_unlinked(tmp_path):
    path = str(tmp_path / "grpc.sock")
    seen = []
    serving = grpc_server.unix_snapshots_server(InMemorySnapshotService(), path)
    server = await anext(serving)
    stop = server.stop

    async def recording_stop(grace):
        seen.append((grace, os.path.exists(path)))
        await stop(grace)

    server.stop = recording_stop
    await serving.aclose()

    assert seen == [(grpc_server.SHUTDOWN_GRACE_SECONDS, True)]
    assert not os.path.exists(path)


async def test_the_cvmfs_vsock_server_serves_through_the_bridge_and_leaves_nothing_behind(tmp_path, monkeypatch):
    """AF_VSOCK cannot be dialled on every kernel: an AF_UNIX listener stands in (same bridge code)."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from snapmux.adapters.grpc.health import SnapshotsHealth
    from snapmux.adapters.unix_sockets import OWNER_ONLY
    from snapmux.entrypoints.cvmfs_snapshotter import container as cvmfs_container

    front = str(tmp_path / "front.sock")

    def unix_listener(port):
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(front)
        listener.listen()
        return listener

    monkeypatch.setattr(cvmfs_container, "vsock_listener", unix_listener)
    private_dirs = tmp_path / "tmp"
    private_dirs.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private_dirs))  # where the server's private socket goes
    health = SnapshotsHealth()
    serving = cvmfs_container.snapshots_server(InMemorySnapshotService(), "vsock://10000", OWNER_ONLY, health)
    listening = await anext(serving)
    [private] = os.listdir(private_dirs)
    assert os.listdir(private_dirs / private) == ["grpc.sock"]
    channel = grpc.aio.insecure_channel(f"unix://{front}")
    try:
        request = health_pb2.HealthCheckRequest(service="")
        answer = await health_pb2_grpc.HealthStub(channel).Check(request, timeout=5)
        assert (listening.address, answer.status) == ("vsock://10000", health_pb2.HealthCheckResponse.SERVING)
    finally:
        await channel.close()
        await serving.aclose()
    assert os.listdir(private_dirs) == []
