"""The daemons as systemd and probes see them, run for real: gRPC health with a real health
client, `/healthz` following the resolver's backend and on the demux's SD port, and sd_notify
READY=1 / STOPPING=1 on a `$NOTIFY_SOCKET` the test binds."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import threading
import time

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from snapmux.adapters.grpc.convert import SNAPSHOTS_SERVICE
from tests.fakes.ttrpc_server import FakeTtrpcControlServer
from tests.integration.conftest import require_binaries
from tests.support.demux_stack import demux_config
from tests.support.notify import NotifySocket
from tests.support.prometheus import free_port
from tests.support.resolver import running_resolver
from tests.support.sockets import VMADDR_CID_LOCAL, vsock_loopback_or_skip

pytestmark = pytest.mark.integration
Status = health_pb2.HealthCheckResponse


def check(channel: grpc.Channel, service: str = "") -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status


def stopped_with_a_final_not_serving(daemon, channel: grpc.Channel, notify: NotifySocket) -> None:
    """SIGTERM with a Watch open: the watcher hears NOT_SERVING and its stream ends, the daemon
    exits 0, and systemd heard READY=1 then STOPPING=1."""
    request = health_pb2.HealthCheckRequest(service=SNAPSHOTS_SERVICE)
    watch = health_pb2_grpc.HealthStub(channel).Watch(request, timeout=60)
    assert next(watch).status == Status.SERVING
    daemon.process.send_signal(signal.SIGTERM)
    assert next(watch).status == Status.NOT_SERVING
    assert next(watch, None) is None
    assert daemon.process.wait(timeout=60) == 0
    assert [m for m in notify.received() if m] == ["READY=1", "STOPPING=1"]


def test_cvmfs_snapshotter_serves_grpc_health_and_notifies_systemd(daemons, tmp_path):
    require_binaries("cvmfs-snapshotter")
    sock = str(tmp_path / "run" / "s.sock")
    with NotifySocket(tmp_path / "notify") as notify:
        argv = ["cvmfs-snapshotter", "--root", str(tmp_path / "root"), "--address", sock]
        daemon = daemons.start(argv, tmp_path / "daemon.log", notify.ready, env=notify.env())
        with grpc.insecure_channel(f"unix://{sock}") as channel:
            assert check(channel) == check(channel, SNAPSHOTS_SERVICE) == Status.SERVING
            stopped_with_a_final_not_serving(daemon, channel, notify)


def test_demux_serves_grpc_health_and_healthz_on_its_sd_port_and_notifies_systemd(daemons, tmp_path):
    require_binaries("demux-snapshotter")
    listen, port = str(tmp_path / "demux.sock"), free_port()
    sd = f"[snapshotter.metrics.service_discovery]\nenable = true\nport = {port}\n"
    config = demux_config(tmp_path, listen, "http://127.0.0.1:9", sd)
    with NotifySocket(tmp_path / "notify") as notify:
        daemon = daemons.start(["demux-snapshotter", "--config", str(config)], tmp_path / "demux.log", notify.ready,
                               env=notify.env())
        healthz = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
        assert (healthz.status_code, healthz.json()) == (200, {"status": "ok"})
        with grpc.insecure_channel(f"unix://{listen}") as channel:
            assert check(channel) == check(channel, SNAPSHOTS_SERVICE) == Status.SERVING
            stopped_with_a_final_not_serving(daemon, channel, notify)


class UnixToVsockRelay:
    """grpcio cannot dial AF_VSOCK: a unix socket whose connections are piped to cid 1, `port`."""

    def __init__(self, path: str, port: int) -> None:
        self.path, self._port = path, port
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(path)
        self._listener.listen()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            far = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
            far.connect((VMADDR_CID_LOCAL, self._port))
            for a, b in ((client, far), (far, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._listener.close()


def test_cvmfs_snapshotter_health_answers_through_its_vsock_bridge(daemons, tmp_path):
    """On kernels without vsock loopback the same bridge is covered by tests/unit/test_health.py."""
    require_binaries("cvmfs-snapshotter")
    port = 21000 + os.getpid() % 9000
    with NotifySocket(tmp_path / "notify") as notify:
        argv = ["cvmfs-snapshotter", "--root", str(tmp_path / "root"), "--address", f"vsock://{port}"]
        daemon = daemons.start(argv, tmp_path / "daemon.log", notify.ready, env=notify.env())
        vsock_loopback_or_skip(port).close()
        relay = UnixToVsockRelay(str(tmp_path / "relay.sock"), port)
        try:
            with grpc.insecure_channel(f"unix://{relay.path}") as channel:
                assert check(channel, SNAPSHOTS_SERVICE) == Status.SERVING
                stopped_with_a_final_not_serving(daemon, channel, notify)
        finally:
            relay.close()


async def healthz_until(url: str, status: int, timeout: float = 30.0) -> dict:
    """Polls /healthz until it answers `status` (a probe's view of a backend coming and going)."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=5) as client:
        while True:
            answer = await client.get(f"{url}/healthz")
            if answer.status_code == status:
                return answer.json()
            if time.monotonic() > deadline:
                raise TimeoutError(f"/healthz still {answer.status_code} {answer.text} after {timeout}s")
            await asyncio.sleep(0.05)


async def test_resolver_healthz_follows_the_firecracker_control_socket(tmp_path):
    containerd = tmp_path / "containerd.sock"
    extra = f'backend = "firecracker-control"\n[firecracker_control]\ncontainerd_socket = "{containerd}"\n'
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "resolver.toml").write_text('address = "127.0.0.1:0"\n' + extra)
    with running_resolver(tmp_path, config=tmp_path / "cfg" / "resolver.toml") as daemon:
        body = await healthz_until(daemon.url, 503)
        assert body["status"] == "unavailable" and f"{containerd}.ttrpc" in body["error"]
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"{daemon.url}/address", params={"namespace": "vm-a"})).status_code == 503
        control = await FakeTtrpcControlServer(f"{containerd}.ttrpc", {"vm-a": "/fc/a.vsock"}).start()
        try:
            assert await healthz_until(daemon.url, 200) == {"status": "ok"}
        finally:
            await control.stop()
            os.unlink(control.path)
        assert "cannot connect" in (await healthz_until(daemon.url, 503))["error"]


async def test_resolver_healthz_follows_the_shim_base_directory(tmp_path):
    base = tmp_path / "shim-base"
    with running_resolver(tmp_path, shim_base_dir=base) as daemon:
        assert (await healthz_until(daemon.url, 503))["error"] == f"shim base directory {base} does not exist"
        base.mkdir()
        await healthz_until(daemon.url, 200)
        shutil.rmtree(base)
        await healthz_until(daemon.url, 503)


async def test_resolver_healthz_follows_the_static_file_and_notifies_systemd(tmp_path):
    with NotifySocket(tmp_path / "notify") as notify:
        with running_resolver(tmp_path, static={"vm-a": {"network": "unix", "address": "/run/a.sock"}},
                              env=notify.env()) as daemon:
            assert notify.received()[:1] == ["READY=1"]
            await healthz_until(daemon.url, 200)
            map_path = tmp_path / "addresses.json"
            map_path.unlink()
            body = await healthz_until(daemon.url, 503)
            assert body["error"].startswith(f"address file {map_path} cannot be used: No such file or directory")
            map_path.write_text('{"vm-b": {"network": "unix", "address": "/run/b.sock"}}')
            await healthz_until(daemon.url, 200)
            assert daemon.stop() == 0
        assert [m for m in notify.received() if m] == ["READY=1", "STOPPING=1"]
