"""Each daemon, started for real, serves its own Prometheus metrics."""

from __future__ import annotations

import errno
import os
import socket

import grpc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from snapmux.adapters.pb.containerd.api.services.snapshots.v1 import snapshots_pb2 as pb
from snapmux.adapters.pb.containerd.api.services.snapshots.v1 import snapshots_pb2_grpc as pb_grpc
from tests.integration.conftest import require_binaries, require_root, unix_socket_listening
from tests.support.prometheus import free_port
from tests.support.resolver import running_resolver

pytestmark = pytest.mark.integration


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_the_resolver_counts_requests_by_status_and_lookups_by_code(tmp_path):
    static = {"vm1": {"network": "unix", "address": "/run/vm1.vsock"}}
    with running_resolver(tmp_path, static=static) as daemon:
        with httpx.Client(base_url=daemon.url, timeout=10) as client:
            assert client.get("/address", params={"namespace": "vm1"}).status_code == 200
            assert client.get("/address", params={"namespace": "nope"}).status_code == 404
            response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    found = samples(response.text)
    assert found[("snapmux_http_requests_total", (("code", "200"), ("server", "http-address-resolver")))] >= 1
    assert found[("snapmux_http_requests_total", (("code", "404"), ("server", "http-address-resolver")))] == 1
    resolves = {labels: v for (name, labels), v in found.items() if name == "snapmux_requests_total"}
    assert resolves[(("code", "NOT_FOUND"), ("method", "Resolve"), ("service", "resolver"))] == 1
    assert resolves[(("code", "OK"), ("method", "Resolve"), ("service", "resolver"))] == 1


def metrics_answer(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_cvmfs_snapshotter_serves_call_inventory_and_layer_metrics(daemons, tmp_path):
    require_root()
    require_binaries("cvmfs-snapshotter")
    socket_path, port = str(tmp_path / "s.sock"), free_port()
    config = tmp_path / "c.toml"
    config.write_text(f'root = "{tmp_path / "root"}"\naddress = "{socket_path}"\nmetrics-address = "127.0.0.1:{port}"\n')
    url = f"http://127.0.0.1:{port}/metrics"
    daemons.start(["cvmfs-snapshotter", "--config", str(config)], tmp_path / "daemon.log",
                  lambda: unix_socket_listening(socket_path) and metrics_answer(url))
    with grpc.insecure_channel(f"unix://{socket_path}") as channel:
        stub = pb_grpc.SnapshotsStub(channel)
        layer = {"containerd.io/snapshot.ref": "sha256:" + "a" * 64}
        stub.Prepare(pb.PrepareSnapshotRequest(key="ns/1/extract", labels=layer))  # no CVMFS layer: fallback
        stub.Commit(pb.CommitSnapshotRequest(name="ns/1/layer", key="ns/1/extract"))
        stub.View(pb.ViewSnapshotRequest(key="ns/1/view", parent="ns/1/layer"))
        with pytest.raises(grpc.RpcError) as missing:
            stub.Stat(pb.StatSnapshotRequest(key="ns/1/nope"))
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    found = samples(httpx.get(url, timeout=10).text)

    def calls(method: str, code: str = "OK") -> float | None:
        return found.get(("snapmux_requests_total", (("code", code), ("method", method), ("service", "snapshots"))))

    assert (calls("Prepare"), calls("Commit"), calls("View"), calls("Stat", "NOT_FOUND")) == (1, 1, 1, 1)
    assert found[("snapmux_request_errors_total", (("code", "NOT_FOUND"), ("method", "Stat"), ("service", "snapshots")))] == 1
    assert found[("snapmux_remote_snapshot_fallbacks_total", ())] == 1
    assert found[("snapmux_snapshots", (("kind", "committed"),))] == 1
    assert found[("snapmux_snapshots", (("kind", "view"),))] == 1
    assert found[("snapmux_snapshots", (("kind", "active"),))] == 0
    assert ("snapmux_snapshots_usage_bytes", ()) in found


def test_cvmfs_snapshotter_in_a_vm_serves_metrics_on_its_vsock_port(daemons, tmp_path):
    require_root()
    require_binaries("cvmfs-snapshotter")
    listen, metrics = 21000 + os.getpid() % 5000, 26000 + os.getpid() % 5000
    log = tmp_path / "daemon.log"
    argv = ["cvmfs-snapshotter", "--root", str(tmp_path / "root"), "--address", f"vsock://{listen}"]
    env = {**os.environ, "SNAPMUX_CVMFS_METRICS_ADDRESS": f"vsock://{metrics}"}
    daemons.start(argv, log, lambda: log.exists() and f"ready on vsock://{listen}" in log.read_text(), env=env)
    assert f"serving Prometheus metrics on vsock://{metrics}/metrics" in log.read_text()
    probe = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
    with pytest.raises(OSError) as taken:
        probe.bind((socket.VMADDR_CID_ANY, metrics))
    probe.close()
    assert taken.value.errno == errno.EADDRINUSE
