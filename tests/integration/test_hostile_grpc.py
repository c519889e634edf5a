"""Hostile gRPC input to the real cvmfs-snapshotter over its socket: every bad request gets its
code and a bounded message, nothing freezes the daemon for other clients, good clients keep going.

Deadlines on calls here are not timing assertions: they only stop a test from hanging for hours
on a regression (a regexp backtracking on the loop, a call never answered).
"""

from __future__ import annotations

import collections
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp

from snapmux.adapters.grpc.errors import LOG_INTERVAL_SECONDS
from snapmux.adapters.pb.containerd.api.services.snapshots.v1 import snapshots_pb2 as pb
from snapmux.adapters.pb.containerd.api.services.snapshots.v1 import snapshots_pb2_grpc as pb_grpc
from tests.integration.conftest import require_binaries, unix_socket_listening
from tests.support.snapshot_dirs import owned_entries

pytestmark = pytest.mark.integration
SN = "cvmfs"
C = grpc.StatusCode
SERVICE = "/containerd.services.snapshots.v1.Snapshots/"
BOUND = 60.0
BIG = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]


@pytest.fixture
def daemon(daemons, tmp_path):
    require_binaries("cvmfs-snapshotter")
    sock = str(tmp_path / "run" / "s.sock")
    argv = ["cvmfs-snapshotter", "--root", str(tmp_path / "root"), "--address", sock, "--log-level", "info"]
    started = daemons.start(argv, tmp_path / "daemon.log", lambda: unix_socket_listening(sock))
    return started, sock


@pytest.fixture
def channel(daemon):
    with grpc.insecure_channel(f"unix://{daemon[1]}", options=BIG) as opened:
        yield opened


@pytest.fixture
def stub(channel):
    return pb_grpc.SnapshotsStub(channel)


def names(stub, *filters, timeout=BOUND):
    return sorted(i.name for r in stub.List(pb.ListSnapshotsRequest(snapshotter=SN, filters=list(filters)),
                                            timeout=timeout) for i in r.info)


def rejected(call, request) -> grpc.RpcError:
    """The error a unary call or a whole stream (List) ends with."""
    with pytest.raises(grpc.RpcError) as raised:
        reply = call(request, timeout=BOUND)
        if hasattr(reply, "__next__"):
            list(reply)
    return raised.value


def listing(*filters: str) -> pb.ListSnapshotsRequest:
    return pb.ListSnapshotsRequest(snapshotter=SN, filters=list(filters))


# -- filters (defect 2) ---------------------------------------------------------------------


def test_a_catastrophic_regexp_is_answered_and_other_clients_are_served(stub):
    """`(a+)+$` against `aaa...a!` backtracked exponentially with Python's re, on the event loop."""
    stub.Prepare(pb.PrepareSnapshotRequest(snapshotter=SN, key="a" * 64 + "!"), timeout=BOUND)
    stub.Prepare(pb.PrepareSnapshotRequest(snapshotter=SN, key="aaaa"), timeout=BOUND)
    assert names(stub, "name~=(a+)+$") == ["aaaa"]
    assert names(stub, "name~=/(a+)+$/", "name~=|^a{64}!$|") == sorted(["a" * 64 + "!", "aaaa"])
    assert stub.Stat(pb.StatSnapshotRequest(snapshotter=SN, key="aaaa"), timeout=BOUND).info.name == "aaaa"


@pytest.mark.parametrize("pattern", [r"(a)\1", "(?<=a)b", "(?!a)", "a{1001}", "(", "[z-a]", r"\8"])
def test_patterns_re2_refuses_are_invalid_argument(stub, pattern):
    error = rejected(stub.List, listing(f"name~={pattern}"))
    assert error.code() == C.INVALID_ARGUMENT
    assert "regular expression" in error.details()


@pytest.mark.parametrize("bad", ["name==/x/", "name==|x|", "/a/==x", "name==a\x00", "labels.\x00", 'name~="a\nb"',
                                 "name==" + "x" * (70 * 1024)])
def test_filters_containerd_refuses_are_invalid_argument(stub, bad):
    error = rejected(stub.List, listing(bad))
    assert error.code() == C.INVALID_ARGUMENT
    assert len(error.details()) < 1024


def test_many_filters_together_are_bounded(stub):
    error = rejected(stub.List, listing(*["name==x"] * 20000))
    assert error.code() == C.INVALID_ARGUMENT


# -- concurrent Lists (defect 3) ------------------------------------------------------------


@pytest.mark.timeout(900)
def test_a_thousand_concurrent_lists_all_complete(daemon):
    """2,000 snapshots, 1,000 List streams over 10 channels: gRPC core used to cancel the calls
    grpc.aio had not accepted within 30 s, while every accepted List converted on the loop."""
    sock = daemon[1]
    channels = [grpc.insecure_channel(f"unix://{sock}", options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(10)]
    stubs = [pb_grpc.SnapshotsStub(c) for c in channels]
    try:
        with ThreadPoolExecutor(32) as pool:
            list(pool.map(lambda i: stubs[i % 10].Prepare(pb.PrepareSnapshotRequest(
                snapshotter=SN, key=f"k{i}", labels={"containerd.io/snapshot.ref": f"sha256:{i:064x}"})), range(2000)))
        outcomes, lock = collections.Counter(), threading.Lock()

        def one(i: int) -> None:
            try:
                count = sum(len(r.info) for r in stubs[i % 10].List(pb.ListSnapshotsRequest(snapshotter=SN)))
                outcome = f"OK {count}"
            except grpc.RpcError as error:
                outcome = error.code().name
            with lock:
                outcomes[outcome] += 1

        with ThreadPoolExecutor(1000) as pool:
            list(pool.map(one, range(1000)))
        assert outcomes == {"OK 2000": 1000}
    finally:
        for opened in channels:
            opened.close()


def test_streams_never_read_do_not_stop_other_clients(daemon, stub):
    for i in range(300):
        stub.Prepare(pb.PrepareSnapshotRequest(snapshotter=SN, key=f"k{i}", labels={"l": "v" * 3000}), timeout=BOUND)
    idle = grpc.insecure_channel(f"unix://{daemon[1]}", options=[("grpc.use_local_subchannel_pool", 1)])
    try:
        idle_stub = pb_grpc.SnapshotsStub(idle)
        unread = [idle_stub.List(pb.ListSnapshotsRequest(snapshotter=SN)) for _ in range(200)]
        assert len(names(stub)) == 300
        assert stub.Stat(pb.StatSnapshotRequest(snapshotter=SN, key="k1"), timeout=BOUND).info.name == "k1"
        for call in unread:
            call.cancel()
    finally:
        idle.close()
    stub.Prepare(pb.PrepareSnapshotRequest(snapshotter=SN, key="after"), timeout=BOUND)
    assert len(names(stub)) == 301


# -- messages, keys, labels ------------------------------------------------------------------


HUGE = "k" * (1 << 20)
UNKNOWN_HUGE_KEY = {
    "Stat": pb.StatSnapshotRequest(snapshotter=SN, key=HUGE),
    "Mounts": pb.MountsRequest(snapshotter=SN, key=HUGE),
    "Usage": pb.UsageRequest(snapshotter=SN, key=HUGE),
    "Remove": pb.RemoveSnapshotRequest(snapshotter=SN, key=HUGE),
    "Commit": pb.CommitSnapshotRequest(snapshotter=SN, name="n", key=HUGE),
    "Update": pb.UpdateSnapshotRequest(snapshotter=SN, info=pb.Info(name=HUGE)),
    "Prepare": pb.PrepareSnapshotRequest(snapshotter=SN, key="x", parent=HUGE),
    "View": pb.ViewSnapshotRequest(snapshotter=SN, key="x", parent=HUGE),
}


@pytest.mark.parametrize("method", sorted(UNKNOWN_HUGE_KEY))
def test_a_megabyte_key_is_not_found_with_a_bounded_message(stub, method):
    """The whole key in the message overflowed gRPC's trailer limit: RESOURCE_EXHAUSTED "Stream removed"."""
    error = rejected(getattr(stub, method), UNKNOWN_HUGE_KEY[method])
    assert error.code() == C.NOT_FOUND, error.details()[:200]
    assert "elided" in error.details() and len(error.details()) < 1024


@pytest.mark.parametrize("key", ["k" * 5000, "a\x00b", ""])
def test_bad_keys_on_prepare_are_invalid_argument(stub, key):
    error = rejected(stub.Prepare, pb.PrepareSnapshotRequest(snapshotter=SN, key=key))
    assert error.code() == C.INVALID_ARGUMENT and len(error.details()) < 1024


MALFORMED = {
    "Stat": b"\x0a\xff\xff",  # a length beyond the message
    "Prepare": b"\x12\x02\xc3\x28",  # key: invalid UTF-8
    "Commit": b"\x1a\x03\xff\xfe\xfd",
    "Update": b"\x12\x05\x0a\x03\xed\xa0\x80",  # info.name: a UTF-16 surrogate
    "Remove": b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",  # a varint tag too long
    "List": b"\x12\x01\xff",  # filters: invalid UTF-8
}


@pytest.mark.parametrize("method", sorted(MALFORMED))
def test_malformed_protobuf_is_invalid_argument(channel, method):
    call = (channel.unary_stream if method == "List" else channel.unary_unary)(SERVICE + method)
    error = rejected(call, MALFORMED[method])
    assert error.code() == C.INVALID_ARGUMENT
    assert error.details().startswith("malformed request")


def test_a_flood_of_malformed_messages_is_a_few_log_lines(daemon, channel, stub):
    call = channel.unary_unary(SERVICE + "Stat")
    started = time.monotonic()
    for _ in range(200):
        assert rejected(call, b"\x0a\xff\xff").code() == C.INVALID_ARGUMENT
    stub.Prepare(pb.PrepareSnapshotRequest(snapshotter=SN, key="fine"), timeout=BOUND)
    log = daemon[0].log()
    assert "Traceback" not in log
    at_most = 2 + (time.monotonic() - started) // LOG_INTERVAL_SECONDS  # one line per interval, however slow
    assert 1 <= log.count("malformed request") <= at_most, log[-2000:]


def test_big_label_maps_are_listed_in_bounded_messages(stub):
    """Eight snapshots of ~8 MB of labels each: one List message of 100 would be far beyond any limit."""
    labels = {f"l{i:05d}": "v" * 4000 for i in range(2000)}
    for i in range(8):
        stub.Prepare(pb.PrepareSnapshotRequest(snapshotter=SN, key=f"big{i}", labels=labels), timeout=BOUND)
    replies = list(stub.List(pb.ListSnapshotsRequest(snapshotter=SN), timeout=BOUND))
    assert sorted(i.name for r in replies for i in r.info) == [f"big{i}" for i in range(8)]
    assert all(len(r.info) == 1 for r in replies)
    assert len(stub.Stat(pb.StatSnapshotRequest(snapshotter=SN, key="big3"), timeout=BOUND).info.labels) == 2000


@pytest.mark.parametrize("labels", [{"": "v"}, {"k": "v" * 4096}, {"k" * 4097: ""}])
def test_bad_labels_are_invalid_argument(stub, labels):
    error = rejected(stub.Prepare, pb.PrepareSnapshotRequest(snapshotter=SN, key="x", labels=labels))
    assert error.code() == C.INVALID_ARGUMENT
    assert names(stub) == []


@pytest.mark.parametrize("paths", [["labels."], ["name"], ["labels.x", "kind"], ["labels.k" + "x" * 5000]])
def test_hostile_update_field_paths_are_invalid_argument_and_change_nothing(stub, paths):
    stub.Prepare(pb.PrepareSnapshotRequest(snapshotter=SN, key="u", labels={"keep": "1"}), timeout=BOUND)
    info = pb.Info(name="u", labels={"k" + "x" * 5000: "v", "x": "1"})
    error = rejected(stub.Update, pb.UpdateSnapshotRequest(snapshotter=SN, info=info, update_mask=FieldMask(paths=paths)))
    assert error.code() == C.INVALID_ARGUMENT
    assert dict(stub.Stat(pb.StatSnapshotRequest(snapshotter=SN, key="u"), timeout=BOUND).info.labels) == {"keep": "1"}


@pytest.mark.parametrize("stamp", [Timestamp(seconds=1 << 62), Timestamp(seconds=-(1 << 40)), Timestamp(nanos=-5),
                                   Timestamp(nanos=2_000_000_000)])
def test_timestamps_out_of_range_are_invalid_argument(daemon, stub, stamp):
    stub.Prepare(pb.PrepareSnapshotRequest(snapshotter=SN, key="u", labels={"keep": "1"}), timeout=BOUND)
    info = pb.Info(name="u", labels={"x": "1"}, created_at=stamp, updated_at=stamp)
    assert rejected(stub.Update, pb.UpdateSnapshotRequest(snapshotter=SN, info=info)).code() == C.INVALID_ARGUMENT
    assert dict(stub.Stat(pb.StatSnapshotRequest(snapshotter=SN, key="u"), timeout=BOUND).info.labels) == {"keep": "1"}
    assert "Traceback" not in daemon[0].log()


def test_many_field_paths_in_one_update(stub):
    stub.Prepare(pb.PrepareSnapshotRequest(snapshotter=SN, key="u"), timeout=BOUND)
    paths = [f"labels.l{i}" for i in range(20000)]
    info = pb.Info(name="u", labels={f"l{i}": "v" for i in range(0, 20000, 2)})
    reply = stub.Update(pb.UpdateSnapshotRequest(snapshotter=SN, info=info, update_mask=FieldMask(paths=paths)),
                        timeout=BOUND)
    assert len(reply.info.labels) == 10000


def test_concurrent_prepares_of_one_key_make_one_snapshot(daemon, tmp_path):
    with grpc.insecure_channel(f"unix://{daemon[1]}") as opened:
        client = pb_grpc.SnapshotsStub(opened)

        def prepare(_: int) -> str:
            try:
                client.Prepare(pb.PrepareSnapshotRequest(snapshotter=SN, key="same"), timeout=BOUND)
                return "OK"
            except grpc.RpcError as error:
                return error.code().name

        with ThreadPoolExecutor(64) as pool:
            outcomes = collections.Counter(pool.map(prepare, range(200)))
        assert outcomes == {"OK": 1, "ALREADY_EXISTS": 199}
        assert names(client) == ["same"]
    assert len(owned_entries(tmp_path / "root" / "snapshots")) == 1


def test_a_deep_parent_chain(stub):
    parent = ""
    for depth in range(150):
        stub.Prepare(pb.PrepareSnapshotRequest(snapshotter=SN, key=f"a{depth}", parent=parent), timeout=BOUND)
        stub.Commit(pb.CommitSnapshotRequest(snapshotter=SN, name=f"c{depth}", key=f"a{depth}"), timeout=BOUND)
        parent = f"c{depth}"
    mounts = stub.Prepare(pb.PrepareSnapshotRequest(snapshotter=SN, key="top", parent=parent), timeout=BOUND).mounts
    lower = next(o for o in mounts[0].options if o.startswith("lowerdir="))
    assert lower.count(":") == 149
    assert len(names(stub, "parent~=^c14[0-9]$")) == 10
    error = rejected(stub.Remove, pb.RemoveSnapshotRequest(snapshotter=SN, key="c0"))
    assert error.code() == C.FAILED_PRECONDITION
