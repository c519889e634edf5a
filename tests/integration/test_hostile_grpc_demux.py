"""The same hostile gRPC input through demux-snapshotter's forwarding path (demux -> vsock stand-in
-> cvmfs-snapshotter): the right code, a bounded message, and good calls still forwarded."""

from __future__ import annotations

import collections
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from snapmux.adapters.pb.containerd.api.services.snapshots.v1 import snapshots_pb2 as pb
from snapmux.adapters.pb.containerd.api.services.snapshots.v1 import snapshots_pb2_grpc as pb_grpc
from tests.integration.conftest import require_binaries, unix_socket_listening
from tests.integration.test_hostile_grpc import MALFORMED, SERVICE, listing, rejected

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
C = grpc.StatusCode
NS = "vm-a"
BOUND = 60.0


@pytest.fixture
def channel(daemons, tmp_path):
    require_binaries("cvmfs-snapshotter", "demux-snapshotter", "http-address-resolver")
    listen = str(tmp_path / "demux.sock")
    argv = [sys.executable, "-m", "tests.support.demux_stack", "--root", str(tmp_path / "stack"), "--socket", listen,
            "--vm", NS]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    daemons.start(argv, tmp_path / "stack.log", lambda: unix_socket_listening(listen), env=env)
    with grpc.insecure_channel(f"unix://{listen}") as opened:
        yield opened


@pytest.fixture
def stub(channel):
    return pb_grpc.SnapshotsStub(channel)


class Namespaced:
    """The stub's calls with the namespace metadata containerd's proxy client would send."""

    def __init__(self, stub, namespace: str = NS) -> None:
        self._stub, self._metadata = stub, (("containerd-namespace", namespace),)

    def __getattr__(self, method):
        return lambda request, **kw: getattr(self._stub, method)(request, metadata=self._metadata, **kw)


@pytest.mark.parametrize("method", sorted(MALFORMED))
def test_malformed_protobuf_is_invalid_argument(channel, method):
    call = (channel.unary_stream if method == "List" else channel.unary_unary)(SERVICE + method)
    error = rejected(call, MALFORMED[method])
    assert error.code() == C.INVALID_ARGUMENT and error.details().startswith("malformed request")


def test_a_megabyte_key_is_bounded_whether_forwarded_or_refused(stub):
    huge = "k" * (1 << 20)
    forwarded = rejected(Namespaced(stub).Stat, pb.StatSnapshotRequest(key=huge))
    assert forwarded.code() == C.NOT_FOUND and len(forwarded.details()) < 1024
    unroutable = rejected(stub.Stat, pb.StatSnapshotRequest(key=huge))
    assert unroutable.code() == C.FAILED_PRECONDITION and len(unroutable.details()) < 1024


@pytest.mark.parametrize("namespace", ["../etc", "a" * 5000, "vm a", "vm-a/"])
def test_hostile_namespace_metadata_is_invalid_argument(stub, namespace):
    error = rejected(Namespaced(stub, namespace).Prepare, pb.PrepareSnapshotRequest(key="x"))
    assert error.code() == C.INVALID_ARGUMENT and len(error.details()) < 1024


def test_filters_are_checked_before_any_fan_out_and_forwarded_ones_are_re2(stub):
    assert rejected(stub.List, listing(r"name~=(a)\1")).code() == C.INVALID_ARGUMENT
    assert rejected(stub.List, listing("name==/x/")).code() == C.INVALID_ARGUMENT
    namespaced = Namespaced(stub)
    namespaced.Prepare(pb.PrepareSnapshotRequest(key=f"{NS}/1/" + "a" * 64 + "!"), timeout=BOUND)
    names = [i.name for r in namespaced.List(listing("name~=(a+)+$"), timeout=BOUND) for i in r.info]
    assert names == []
    assert rejected(namespaced.List, listing("name~=(?<=a)")).code() == C.INVALID_ARGUMENT


def test_many_concurrent_lists_through_the_demux_all_complete(stub):
    namespaced = Namespaced(stub)
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: namespaced.Prepare(pb.PrepareSnapshotRequest(key=f"{NS}/{i}/k")), range(300)))

    def one(_: int) -> str:
        try:
            return f"OK {sum(len(r.info) for r in namespaced.List(listing()))}"
        except grpc.RpcError as error:
            return error.code().name

    with ThreadPoolExecutor(300) as pool:
        assert collections.Counter(pool.map(one, range(300))) == {"OK 300": 300}
