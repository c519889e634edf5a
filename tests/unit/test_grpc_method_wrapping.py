"""The snapshots service's handlers are wrapped once, when it is added to the server: grpc.aio
dispatches every call straight to the wrapper (no server interceptor runs per call), the first
wrapper outermost; the health service is never wrapped."""

from __future__ import annotations

from types import SimpleNamespace

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from snapmux.adapters.grpc import server as grpc_server
from snapmux.adapters.grpc.client import GrpcSnapshotService
from snapmux.adapters.grpc.health import SnapshotsHealth
from snapmux.adapters.grpc.method_wrapping import SNAPSHOTS_METHODS, SnapshotsMethodInterceptor, add_wrapped
from snapmux.adapters.grpc.servicer import add_snapshots_servicer
from snapmux.adapters.pb.containerd.api.services.snapshots.v1 import snapshots_pb2, snapshots_pb2_grpc as pb_grpc
from tests.fakes.snapshots import InMemorySnapshotService


class Recording(SnapshotsMethodInterceptor):
    """Counts its wraps and records, per call, that it ran."""

    def __init__(self, name: str, ran: list[str]) -> None:
        self.name, self.ran, self.wrapped = name, ran, []

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        self.wrapped.append(method)
        if handler.unary_unary is None:
            return handler
        inner = handler.unary_unary

        async def behavior(request, context):  # type: ignore[no-untyped-def]
            self.ran.append(self.name)
            return await inner(request, context)

        return grpc.unary_unary_rpc_method_handler(behavior, handler.request_deserializer, handler.response_serializer)


async def test_each_method_is_wrapped_once_when_added_and_every_call_runs_the_wrappers_in_order(tmp_path):
    ran: list[str] = []
    outer, inner = Recording("outer", ran), Recording("inner", ran)
    server = grpc.aio.server()
    add_snapshots_servicer(server, InMemorySnapshotService(), [outer, inner])
    server.add_insecure_port(f"unix://{tmp_path / 's.sock'}")
    await server.start()
    channel = grpc.aio.insecure_channel(f"unix://{tmp_path / 's.sock'}")
    try:
        client = GrpcSnapshotService(channel, "test")
        await client.prepare("k")
        for _ in range(3):
            await client.mounts("k")
        assert ran == ["outer", "inner"] * 4
        assert outer.wrapped == inner.wrapped and len(set(outer.wrapped)) == len(outer.wrapped) >= 10
        assert all(method.startswith(SNAPSHOTS_METHODS) for method in outer.wrapped)
    finally:
        await channel.close()
        await server.stop(None)


async def test_the_daemon_server_runs_no_grpc_interceptor_and_leaves_health_unwrapped(tmp_path, monkeypatch):
    wrapped: list[str] = []
    original = grpc_server.DomainErrorInterceptor.wrap
    monkeypatch.setattr(grpc_server.DomainErrorInterceptor, "wrap",
                        lambda self, handler, method: wrapped.append(method) or original(self, handler, method))
    made = []
    real_server = grpc.aio.server
    monkeypatch.setattr(grpc_server.grpc.aio, "server", lambda **kwargs: made.append(kwargs) or real_server(**kwargs))
    server = grpc_server.new_snapshots_server(InMemorySnapshotService(), health=SnapshotsHealth())
    assert not made[0]["interceptors"]  # grpc.aio runs each of them on every call
    server.add_insecure_port(f"unix://{tmp_path / 's.sock'}")
    await server.start()
    channel = grpc.aio.insecure_channel(f"unix://{tmp_path / 's.sock'}")
    try:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
        assert reply.status in (health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING)
        assert wrapped and all(method.startswith(SNAPSHOTS_METHODS) for method in wrapped)
    finally:
        await channel.close()
        await server.stop(None)


METHODS = [method.name for method in snapshots_pb2.DESCRIPTOR.services_by_name["Snapshots"].methods]


class Handlers:
    """Stands in for the server: generic handlers only, found by method as gRPC does. A registered
    method would cost every call (grpc.aio's server loop waits on a request per registered method)."""

    def __init__(self) -> None:
        self.generic: list[grpc.GenericRpcHandler] = []

    def add_generic_rpc_handlers(self, handlers) -> None:  # type: ignore[no-untyped-def]
        self.generic.extend(handlers)

    def add_registered_method_handlers(self, service, handlers) -> None:  # type: ignore[no-untyped-def]
        raise AssertionError(f"{service}: registered methods")

    def handler(self, method: str) -> grpc.RpcMethodHandler | None:
        details = SimpleNamespace(method=method, invocation_metadata=())
        return next((found for found in (g.service(details) for g in self.generic) if found is not None), None)


def test_stat_and_mounts_answer_serialized_bytes_sent_as_they_are_and_the_rest_keep_their_serializers():
    handlers = Handlers()
    add_snapshots_servicer(handlers, InMemorySnapshotService(), [Recording("only", [])])  # type: ignore[arg-type]
    found = {name: handlers.handler(SNAPSHOTS_METHODS + name) for name in METHODS}
    assert all(found.values()) and len(found) == 10
    assert {name for name, h in found.items() if h.response_serializer is None} == {"Stat", "Mounts"}


def test_services_are_added_as_generic_handlers_only():
    handlers = Handlers()
    add_snapshots_servicer(handlers, InMemorySnapshotService(), [])  # type: ignore[arg-type]
    SnapshotsHealth().add_to(handlers)  # type: ignore[arg-type]
    assert handlers.handler("/grpc.health.v1.Health/Check") is not None
    assert handlers.handler(SNAPSHOTS_METHODS + "Stat") is not None


def test_only_a_unary_method_can_answer_serialized_bytes():
    with pytest.raises(ValueError, match="unary"):
        add_wrapped(Handlers(), pb_grpc.add_SnapshotsServicer_to_server, pb_grpc.SnapshotsServicer(), [],  # type: ignore[arg-type]
                    serialized=("List",))


async def test_the_snapshots_and_health_services_register_no_core_methods(monkeypatch):
    """The daemons' servers, the domain servicer's and the demux's relay, each with health: generic
    handlers only (`Handlers` refuses a registered method)."""
    from snapmux.adapters.grpc.relay_servicer import SnapshotsRelayServicer
    from snapmux.application.routing import NamespaceRouter

    made: list[Handlers] = []
    monkeypatch.setattr(grpc_server.grpc.aio, "server", lambda **_: made.append(Handlers()) or made[-1])
    grpc_server.new_snapshots_server(InMemorySnapshotService(), health=SnapshotsHealth())
    grpc_server.new_snapshots_server(SnapshotsRelayServicer(NamespaceRouter(None)), health=SnapshotsHealth())  # type: ignore[arg-type]
    assert [len(server.generic) for server in made] == [2, 2]  # snapshots, health
