"""What each real daemon exports, scraped after some traffic, is what docs/metrics.md lists for
it: no metric, and no label, that the reference does not document for that daemon."""

from __future__ import annotations

import grpc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from snapmux.adapters.pb.containerd.api.services.snapshots.v1 import snapshots_pb2 as pb
from snapmux.adapters.pb.containerd.api.services.snapshots.v1 import snapshots_pb2_grpc as pb_grpc
from tests.integration.conftest import require_binaries, require_root, unix_socket_listening
from tests.support.firecracker_vsock import FirecrackerVsockStandIn
from tests.support.metrics_doc import documented_metrics
from tests.support.prometheus import free_port, free_port_range
from tests.support.resolver import running_resolver

pytestmark = pytest.mark.integration
LAYER = {"containerd.io/snapshot.ref": "sha256:" + "a" * 64}


def documented_name(family) -> str:
    """As the table spells it: counters with `_total`; the `<name>_created` timestamps prometheus-client
    adds beside each counter and histogram count as their metric (the doc says so)."""
    name = family.name
    if name.endswith("_created") and family.type == "gauge":
        base = name.removesuffix("_created")
        return base + "_total" if base + "_total" in documented_metrics() else base
    return name + "_total" if family.type == "counter" else name


def exported(text: str) -> dict[str, set[str]]:
    """Metric name as documented -> the label names its samples carry."""
    found: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        labels = found.setdefault(documented_name(family), set())
        for sample in family.samples:
            labels.update(set(sample.labels) - {"le"})
    return found


def assert_documented_for(daemon: str, text: str, expected: set[str]) -> None:
    documented = documented_metrics()
    found = exported(text)
    assert expected <= set(found), "the traffic should have produced these"
    for name, labels in found.items():
        assert name in documented, f"{daemon} exports {name}, which docs/metrics.md does not list"
        assert daemon in documented[name].daemons, f"docs/metrics.md does not list {name} for {daemon}"
        assert labels == set(documented[name].labels), name


def test_the_resolver_exports_only_documented_metrics(tmp_path):
    with running_resolver(tmp_path, static={"vm-a": {"network": "unix", "address": "/run/a.sock"}}) as daemon:
        with httpx.Client(base_url=daemon.url, timeout=10) as client:
            client.get("/address", params={"namespace": "vm-a"})
            client.get("/address", params={"namespace": "nope"})
            text = client.get("/metrics").text
    assert_documented_for("http-address-resolver", text, {
        "snapmux_requests_total", "snapmux_request_errors_total", "snapmux_request_duration_seconds",
        "snapmux_http_requests_total",
    })


def cvmfs_snapshotter(daemons, directory, metrics_address: str, ready) -> str:
    sock = str(directory / "snapshotter.sock")
    config = directory / "c.toml"
    config.write_text(f'root = "{directory / "root"}"\naddress = "{sock}"\nmetrics-address = "{metrics_address}"\n')
    daemons.start(["cvmfs-snapshotter", "--config", str(config)], directory / "cvmfs.log",
                  lambda: unix_socket_listening(sock) and ready())
    return sock


def test_cvmfs_snapshotter_exports_only_documented_metrics(daemons, tmp_path):
    require_root()
    require_binaries("cvmfs-snapshotter")
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    sock = cvmfs_snapshotter(daemons, tmp_path, f"127.0.0.1:{port}", lambda: _answers(url))
    with grpc.insecure_channel(f"unix://{sock}") as channel:
        stub = pb_grpc.SnapshotsStub(channel)
        stub.Prepare(pb.PrepareSnapshotRequest(key="ns/1/extract", labels=LAYER))
        with pytest.raises(grpc.RpcError):
            stub.Stat(pb.StatSnapshotRequest(key="ns/1/nope"))
    assert_documented_for("cvmfs-snapshotter", httpx.get(url, timeout=10).text, {
        "snapmux_requests_total", "snapmux_request_errors_total", "snapmux_request_duration_seconds",
        "snapmux_snapshots", "snapmux_snapshots_usage_bytes", "snapmux_remote_snapshot_fallbacks_total",
    })


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


async def test_the_demux_exports_only_documented_metrics(daemons, tmp_path):
    """A VM (cvmfs-snapshotter behind a vsock stand-in), the resolver, the demux with per-VM
    metrics proxies and SD: one routed call, one missing VM, one scrape through a proxy."""
    require_root()
    require_binaries("cvmfs-snapshotter", "demux-snapshotter")
    vm = tmp_path / "vm"
    vm.mkdir()
    metrics_sock = vm / "metrics.sock"
    snapshotter = cvmfs_snapshotter(daemons, vm, f"unix://{metrics_sock}", lambda: unix_socket_listening(metrics_sock))
    standin = await FirecrackerVsockStandIn(str(vm / "v.sock"), {10000: snapshotter, 10001: str(metrics_sock)}).start()
    addresses = {"vm-a": {"network": "unix", "address": str(vm / "v.sock")},
                 "vm-gone": {"network": "unix", "address": str(tmp_path / "nobody.sock")}}
    try:
        with running_resolver(tmp_path / "resolver", static=addresses) as resolver:
            listen, sd, proxies = str(tmp_path / "demux.sock"), free_port(), free_port_range(4)
            config = tmp_path / "demux.toml"
            config.write_text(
                f'[snapshotter.listener]\naddress = "{listen}"\n'
                f'[snapshotter.proxy.address.resolver]\naddress = "{resolver.url}"\n'
                '[snapshotter.dialer]\ntimeout = "1s"\nretry_interval = "50ms"\n'
                f'[snapshotter.metrics]\nenable = true\nport_range = "{proxies.first}-{proxies.last}"\n'
                f'[snapshotter.metrics.service_discovery]\nenable = true\nport = {sd}\n'
            )
            daemons.start(["demux-snapshotter", "--config", str(config)], tmp_path / "demux.log",
                          lambda: unix_socket_listening(listen))
            text = await _demux_traffic_then_scrape(listen, f"http://127.0.0.1:{sd}")
    finally:
        await standin.stop()
    assert_documented_for("demux-snapshotter", text, {
        "snapmux_requests_total", "snapmux_request_errors_total", "snapmux_request_duration_seconds",
        "snapmux_vsock_dials_total", "snapmux_vsock_dial_failures_total", "snapmux_remote_clients",
        "snapmux_metrics_proxies",
    })


async def _demux_traffic_then_scrape(listen: str, sd_url: str) -> str:
    async with grpc.aio.insecure_channel(f"unix://{listen}") as channel:
        stub = pb_grpc.SnapshotsStub(channel)
        await stub.Prepare(pb.PrepareSnapshotRequest(key="vm-a/1/x"), metadata=(("containerd-namespace", "vm-a"),))
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Stat(pb.StatSnapshotRequest(key="x"), metadata=(("containerd-namespace", "vm-gone"),))
    async with httpx.AsyncClient(timeout=10) as client:
        targets = (await client.get(f"{sd_url}/")).json()
        [vm_target] = [t["targets"][0] for t in targets if t["labels"].get("namespace") == "vm-a"]
        assert (await client.get(f"http://{vm_target}/metrics")).status_code == 200  # a dial for purpose=metrics
        return (await client.get(f"{sd_url}/metrics")).text
