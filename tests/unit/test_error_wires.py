"""One error table: every domain error class, on every wire, as its declared `code` says.

The classes are found by walking `DomainError.__subclasses__()`, so a class added
to the domain is checked here without touching this file. Each wire is driven
for real where it is cheap: gRPC through a served SnapshotService (the raw status
a Go client sees, and the domain error our client raises back), the metrics code
label of that same call, ttrpc from response bytes, and the resolver's HTTP from
the agent's answer over loopback back to the demux's client. The expected HTTP
statuses are written out here, independently of the adapter's table.
"""

from __future__ import annotations

import grpc
import httpx
import pytest

from snapmux.adapters.grpc.client import GrpcSnapshotService
from snapmux.adapters.grpc.errors import ERROR_TABLE
from snapmux.adapters.grpc.server import start_unix_snapshots_server
from snapmux.adapters.http.server import HttpServer
from snapmux.adapters.pb.containerd.api.services.snapshots.v1 import snapshots_pb2 as pb
from snapmux.adapters.pb.containerd.api.services.snapshots.v1 import snapshots_pb2_grpc as pb_grpc
from snapmux.adapters.pb.ttrpc import ttrpc_pb2
from snapmux.adapters.resolver.http_api import AddressApi
from snapmux.adapters.resolver.http_client import HttpAddressResolver
from snapmux.adapters.ttrpc.client import TtrpcClient
from snapmux.application.metrics import MeasuredSnapshotService
from snapmux.domain import errors as e
from tests.fakes.metrics import InMemoryMetricsRegistry
from tests.fakes.resolver import InMemoryAddressResolver
from tests.fakes.snapshots import InMemorySnapshotService


def _subclasses(cls: type[e.DomainError]) -> list[type[e.DomainError]]:
    return [found for sub in cls.__subclasses__() for found in (sub, *_subclasses(sub))]


ERRORS = sorted(set(_subclasses(e.DomainError)), key=lambda cls: cls.__name__)
HTTP_STATUS = {e.Code.INVALID_ARGUMENT: 400, e.Code.NOT_FOUND: 404}
"""The resolver's HTTP contract: these two keep their code, every other failure is 503."""


def test_every_class_declares_a_failure_code_and_no_two_domain_classes_share_one():
    declared = [cls for cls in ERRORS if cls.__module__ == e.__name__]
    assert len(declared) >= 11
    assert all(isinstance(cls.code, e.Code) and cls.code != e.Code.OK for cls in ERRORS)
    assert len({cls.code for cls in declared}) == len(declared)
    assert set(ERROR_TABLE) == set(declared)


class Raising(InMemorySnapshotService):
    def __init__(self, error: e.DomainError) -> None:
        super().__init__()
        self.error = error

    async def stat(self, key: str):
        raise self.error


@pytest.mark.parametrize("error", ERRORS, ids=lambda cls: cls.__name__)
async def test_grpc_both_ways_and_the_metrics_label(tmp_path, error):
    metrics = InMemoryMetricsRegistry()
    server = await start_unix_snapshots_server(MeasuredSnapshotService(Raising(error("it broke")), metrics),
                                               str(tmp_path / "s.sock"))
    channel = grpc.aio.insecure_channel(f"unix://{tmp_path / 's.sock'}")
    try:
        with pytest.raises(grpc.aio.AioRpcError) as raw:
            await pb_grpc.SnapshotsStub(channel).Stat(pb.StatSnapshotRequest(snapshotter="t", key="k"))
        assert (raw.value.code(), raw.value.details()) == (grpc.StatusCode[error.code.name], "it broke")
        with pytest.raises(e.DomainError) as back:
            await GrpcSnapshotService(channel, "t").stat("k")
        assert (type(back.value), back.value.code, str(back.value)) == (e.error_for(error.code), error.code, "it broke")
    finally:
        await channel.close()
        await server.stop(None)
    assert [code for _, method, code, _ in metrics.calls] == [error.code.name, error.code.name]


@pytest.mark.parametrize("error", ERRORS, ids=lambda cls: cls.__name__)
def test_ttrpc_status_becomes_the_class_declaring_its_code(error):
    answer = ttrpc_pb2.Response(status=ttrpc_pb2.Status(code=int(error.code), message="it broke"))
    with pytest.raises(e.DomainError) as raised:
        TtrpcClient._unwrap(answer.SerializeToString(), "GetVMInfo")
    assert (type(raised.value), raised.value.code, str(raised.value)) == (
        e.error_for(error.code), error.code, "GetVMInfo: it broke"
    )


@pytest.mark.parametrize("error", ERRORS, ids=lambda cls: cls.__name__)
async def test_resolver_http_both_ways(error):
    backend = InMemoryAddressResolver()
    backend.failure = error("it broke")
    server = HttpServer(AddressApi(backend), name="test-agent")
    url = f"http://127.0.0.1:{await server.start_tcp('127.0.0.1', 0)}"
    client = HttpAddressResolver(url, timeout=5.0)
    try:
        async with httpx.AsyncClient() as raw:
            answer = await raw.get(f"{url}/address", params={"namespace": "vm-a"})
        assert (answer.status_code, answer.json()) == (HTTP_STATUS.get(error.code, 503), {"error": "it broke"})
        with pytest.raises(e.DomainError) as back:
            await client.resolve("vm-a")
    finally:
        await client.aclose()
        await server.stop()
    expected = error.code if error.code in HTTP_STATUS else e.Code.UNAVAILABLE
    assert (type(back.value), back.value.code) == (e.error_for(expected), expected)
    assert str(back.value).endswith("it broke")
