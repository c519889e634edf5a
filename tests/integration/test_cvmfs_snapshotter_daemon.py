"""The cvmfs-snapshotter process: clean SIGTERM, restart with state intact, config errors, AF_VSOCK listening."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import threading

import grpc
import pytest

from snapmux.adapters.pb.containerd.api.services.snapshots.v1 import snapshots_pb2 as pb
from snapmux.adapters.pb.containerd.api.services.snapshots.v1 import snapshots_pb2_grpc as pb_grpc
from tests.integration.conftest import require_binaries, unix_socket_listening
from tests.support.sockets import vsock_loopback_or_skip

pytestmark = pytest.mark.integration
SN = "cvmfs"

HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
EMPTY_SETTINGS = bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def start(daemons, tmp_path, address: str, ready=None):
    require_binaries("cvmfs-snapshotter")
    argv = ["cvmfs-snapshotter", "--root", str(tmp_path / "root"), "--address", address, "--log-level", "info"]
    return daemons.start(argv, tmp_path / "daemon.log", ready or (lambda: unix_socket_listening(address)))


def names(stub) -> set[str]:
    return {i.name for reply in stub.List(pb.ListSnapshotsRequest(snapshotter=SN)) for i in reply.info}


def test_sigterm_finishes_in_flight_calls_deletes_nothing_and_restarts_intact(daemons, tmp_path):
    sock = str(tmp_path / "run" / "s.sock")
    daemon = start(daemons, tmp_path, sock)
    with grpc.insecure_channel(f"unix://{sock}") as channel:
        stub = pb_grpc.SnapshotsStub(channel)
        [mount] = stub.Prepare(pb.PrepareSnapshotRequest(snapshotter=SN, key="big")).mounts
        for n in range(20000):  # a Usage walk long enough to be in flight when SIGTERM arrives
            open(os.path.join(mount.source, f"f{n}"), "w").close()
        stub.Prepare(pb.PrepareSnapshotRequest(snapshotter=SN, key="a"))
        stub.Commit(pb.CommitSnapshotRequest(snapshotter=SN, name="base", key="a"))
        in_flight = stub.Usage.future(pb.UsageRequest(snapshotter=SN, key="big"))
        threading.Timer(0.01, daemon.process.send_signal, (15,)).start()
        assert in_flight.result(timeout=60).inodes == 20001
    assert daemon.process.wait(timeout=60) == 0
    assert not os.path.exists(sock)
    entries = os.listdir(tmp_path / "root" / "snapshots")
    assert len(entries) == 2 and len(os.listdir(tmp_path / "root" / "snapshots" / max(entries, key=len))) >= 1

    start(daemons, tmp_path, sock)
    with grpc.insecure_channel(f"unix://{sock}") as channel:
        stub = pb_grpc.SnapshotsStub(channel)
        assert names(stub) == {"big", "base"}
        assert stub.Usage(pb.UsageRequest(snapshotter=SN, key="big")).inodes == 20001


def test_stale_socket_is_replaced(daemons, tmp_path):
    sock = tmp_path / "run" / "s.sock"
    sock.parent.mkdir()
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(sock))
    stale.close()
    start(daemons, tmp_path, str(sock))
    assert oct(os.stat(sock.parent).st_mode & 0o777) in ("0o700", "0o755")  # pre-existing folders are kept


@pytest.mark.parametrize("text, key", [("root = [\n", "invalid TOML"), ("nope = 1\n", "nope"), ("root = 1\n", "root")])
def test_config_error_exits_non_zero_with_one_line(tmp_path, text, key):
    require_binaries("cvmfs-snapshotter")
    config = tmp_path / "c.toml"
    config.write_text(text)
    done = subprocess.run(["cvmfs-snapshotter", "--config", str(config)], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert done.stderr.count("\n") == 1 and key in done.stderr and "Traceback" not in done.stderr


def start_on_vsock(daemons, tmp_path) -> int:
    port = 20000 + os.getpid() % 10000
    log = tmp_path / "daemon.log"
    start(daemons, tmp_path, f"vsock://{port}", ready=lambda: log.exists() and f"ready on vsock://{port}" in log.read_text())
    return port


def test_binds_an_af_vsock_port(daemons, tmp_path):
    port = start_on_vsock(daemons, tmp_path)
    probe = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
    with pytest.raises(OSError) as taken:
        probe.bind((socket.VMADDR_CID_ANY, port))
    probe.close()
    assert taken.value.errno == errno.EADDRINUSE


def test_answers_http2_over_af_vsock_from_cid_1(daemons, tmp_path):
    """Needs a kernel with a vsock loopback transport (vsock_loopback); the bridge itself is unit-tested."""
    port = start_on_vsock(daemons, tmp_path)
    with vsock_loopback_or_skip(port) as client:
        client.sendall(HTTP2_PREFACE + EMPTY_SETTINGS)  # grpcio cannot dial vsock: speak HTTP/2 directly
        assert client.recv(9)[3] == 0x04  # the gRPC server answers with its SETTINGS frame
