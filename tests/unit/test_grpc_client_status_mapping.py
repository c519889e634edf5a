"""The client half of the error table, against a plain (sync) gRPC server from pytest-grpc.

pytest-grpc's real-server mode fits here: the far side is a deliberately dumb
servicer that answers every call with the status code named in the request,
so what is under test is only `GrpcSnapshotService`'s mapping back to domain
errors — for unary calls and for the streaming List alike — with the message
passed through unchanged.
"""

from __future__ import annotations

import grpc
import pytest

from snapmux.adapters.grpc.client import GrpcSnapshotService
from snapmux.adapters.grpc.errors import ERROR_TABLE
from snapmux.adapters.pb.containerd.api.services.snapshots.v1 import snapshots_pb2_grpc as pb_grpc
from snapmux.domain import errors
from snapmux.domain.model import Info, Kind


class StatusCodeServicer(pb_grpc.SnapshotsServicer):
    """Aborts every call with the code whose name is the key (the filter for List)."""

    def _abort(self, name: str, context: grpc.ServicerContext):
        context.abort(grpc.StatusCode[name], f"remote says {name.lower()} for this call")

    def Prepare(self, request, context):
        self._abort(request.key, context)

    def Stat(self, request, context):
        self._abort(request.key, context)

    def Update(self, request, context):
        self._abort(request.info.name, context)

    def List(self, request, context):
        self._abort(request.filters[0], context)
        yield  # a generator, as a streaming handler is


@pytest.fixture(scope="module")
def grpc_add_to_server():
    return pb_grpc.add_SnapshotsServicer_to_server


@pytest.fixture(scope="module")
def grpc_servicer():
    return StatusCodeServicer()


@pytest.fixture(scope="module")
def grpc_stub_cls():
    return pb_grpc.SnapshotsStub


@pytest.fixture
async def client(grpc_server, grpc_addr):
    async with grpc.aio.insecure_channel(grpc_addr) as channel:
        yield GrpcSnapshotService(channel, "status-test")


CASES = sorted(((code.name, error) for error, code in ERROR_TABLE.items()), key=lambda case: case[0])


@pytest.mark.parametrize(("code", "error"), CASES)
async def test_unary_status_comes_back_as_the_domain_error_with_its_message(client, code, error):
    for call in (lambda: client.prepare(code), lambda: client.stat(code),
                 lambda: client.update(Info(code, Kind.ACTIVE), ["labels"])):
        with pytest.raises(error) as raised:
            await call()
        assert type(raised.value) is error
        assert str(raised.value) == f"remote says {code.lower()} for this call"


@pytest.mark.parametrize(("code", "error"), CASES)
async def test_streaming_list_status_comes_back_as_the_domain_error(client, code, error):
    with pytest.raises(error) as raised:
        _ = [info async for info in client.walk([code])]
    assert type(raised.value) is error and str(raised.value) == f"remote says {code.lower()} for this call"


async def test_a_code_outside_the_table_is_unknown_not_a_crash(client):
    with pytest.raises(errors.UnknownError, match="data_loss"):
        await client.stat("DATA_LOSS")


def test_the_sync_stub_sees_the_same_code_on_the_wire(grpc_stub):
    """What a Go client (containerd's proxy) would see: the raw status, not a Python exception type."""
    from snapmux.adapters.pb.containerd.api.services.snapshots.v1 import snapshots_pb2 as pb

    with pytest.raises(grpc.RpcError) as raised:
        grpc_stub.Stat(pb.StatSnapshotRequest(key="FAILED_PRECONDITION"))
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
