"""Faults around a real demux-snapshotter process: each is a clear gRPC error, bounded by the
configured timeouts (the client's own deadline is far longer, so UNAVAILABLE rather than
DEADLINE_EXCEEDED shows the demux answered in time), the other VM keeps working, and the
demux recovers by itself once the fault clears.

Two "VMs": real cvmfs-snapshotter processes behind Firecracker vsock stand-ins. The
resolver is a controllable HTTP stand-in here (down, slow, 500, garbage on demand); the
real http-address-resolver is used by the containerd end-to-end test.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import grpc
import pytest

from snapmux.adapters.grpc.client import GrpcSnapshotService
from snapmux.domain.errors import UnavailableError
from snapmux.domain.model import Kind
from snapmux.entrypoints.lifecycle import EVENT_LOOP_ENV
from tests.integration.conftest import require_binaries, unix_socket_listening
from tests.support.containerd import Daemon
from tests.support.demux_stack import demux_config
from tests.support.firecracker_vsock import FirecrackerVsockStandIn

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _daemons_installed():
    require_binaries("cvmfs-snapshotter", "demux-snapshotter")

PORT = 10000
CLIENT_DEADLINE = 30.0
"""Far above the demux's dial (2s) and resolver (1s) timeouts."""


class ControllableResolver:
    """The resolver's HTTP API (GET /address?namespace=) with a switchable `mode`."""

    def __init__(self, addresses: dict[str, dict]) -> None:
        self.addresses = addresses
        self.mode = "ok"  # ok | slow | 500 | garbage
        self.asked: list[str] = []
        self.port = 0
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> str:
        resolver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                namespace = parse_qs(urlparse(self.path).query).get("namespace", [""])[0]
                resolver.asked.append(namespace)
                if resolver.mode == "slow":
                    time.sleep(3)
                if resolver.mode == "500":
                    return self._send(500, b'{"error": "agent exploded"}')
                if resolver.mode == "garbage":
                    return self._send(200, b"<html>not json")
                if namespace not in resolver.addresses:
                    return self._send(404, b'{"error": "no such namespace"}')
                self._send(200, json.dumps(resolver.addresses[namespace]).encode())

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class Vm:
    def __init__(self, folder, namespace: str) -> None:
        folder.mkdir()
        self.folder, self.namespace = folder, namespace
        self.sock = str(folder / "snapshotter.sock")
        self.vsock = FirecrackerVsockStandIn(str(folder / "v.sock"), {PORT: self.sock})
        self.snapshotter: Daemon | None = None

    def start_snapshotter(self) -> None:
        argv = ["cvmfs-snapshotter", "--root", str(self.folder / "root"), "--address", self.sock, "--log-level", "warning"]
        self.snapshotter = Daemon(argv, self.folder / "snapshotter.log").start(lambda: unix_socket_listening(self.sock))

    def address(self) -> dict:
        return {"network": "unix", "address": self.vsock.uds_path, "snapshotter_port": str(PORT)}


@pytest.fixture
def demux_event_loop(request, monkeypatch):
    """The demux's loop (SNAPMUX_EVENT_LOOP, inherited by the daemon): its default unless parametrized."""
    if hasattr(request, "param"):
        monkeypatch.setenv(EVENT_LOOP_ENV, request.param)


@pytest.fixture
async def stack(tmp_path, demux_event_loop):
    vms = {ns: Vm(tmp_path / ns, ns) for ns in ("vm-a", "vm-b")}
    resolver = ControllableResolver({ns: vm.address() for ns, vm in vms.items()})
    url = resolver.start()
    demux = None
    try:
        for vm in vms.values():
            vm.start_snapshotter()
            await vm.vsock.start()
        listen = str(tmp_path / "demux.sock")
        extra = "[snapshotter.cache]\npoll_connection_frequency = \"500ms\"\n"
        config = demux_config(tmp_path, listen, url, extra).read_text()
        config = config.replace('timeout = "10s"', 'timeout = "2s"')
        config = config.replace(f'address = "{url}"', f'address = "{url}"\ntimeout = "1s"')
        (tmp_path / "demux.toml").write_text(config)
        demux = Daemon(["demux-snapshotter", "--config", str(tmp_path / "demux.toml")], tmp_path / "demux.log")
        demux.start(lambda: unix_socket_listening(listen))
        channel = grpc.aio.insecure_channel(f"unix://{listen}")
        yield Stack(vms, resolver, demux, GrpcSnapshotService(channel, timeout=CLIENT_DEADLINE), tmp_path)
        await channel.close()
    finally:
        if demux is not None:
            demux.kill()
        for vm in vms.values():
            await vm.vsock.stop()
            if vm.snapshotter is not None:
                vm.snapshotter.kill()
        resolver.stop()


class Stack:
    def __init__(self, vms, resolver, demux, client, folder) -> None:
        self.vms, self.resolver, self.demux, self.client, self.folder = vms, resolver, demux, client, folder

    async def recovers(self, key: str, deadline: float = 20.0) -> None:
        """Polls until a call for `key` succeeds again (no restarts, no manual eviction)."""
        end = time.monotonic() + deadline
        while True:
            try:
                await self.client.stat(key)
                return
            except UnavailableError:
                if time.monotonic() > end:
                    raise
                await asyncio.sleep(0.1)


async def unavailable(call) -> str:
    with pytest.raises(UnavailableError) as failure:
        await call
    return str(failure.value)


async def prepared(stack: Stack) -> None:
    await stack.client.prepare("vm-a/1/a")
    await stack.client.prepare("vm-b/1/b")


@pytest.mark.parametrize(
    ("mode", "message"),
    [("slow", "timed out"), ("500", "HTTP 500: agent exploded"), ("garbage", "not JSON")],
)
async def test_resolver_faults(stack, mode, message):
    await stack.client.prepare("vm-b/1/b")  # vm-b resolved and cached before the fault
    stack.resolver.mode = mode
    failing = asyncio.create_task(unavailable(stack.client.prepare("vm-a/1/a")))
    assert (await stack.client.stat("vm-b/1/b")).kind == Kind.ACTIVE  # while vm-a's call is failing
    assert message in await failing
    stack.resolver.mode = "ok"
    await stack.client.prepare("vm-a/1/a")
    assert (await stack.client.stat("vm-a/1/a")).kind == Kind.ACTIVE


async def test_resolver_down(stack):
    await stack.client.prepare("vm-b/1/b")
    stack.resolver.stop()
    assert "resolver http://127.0.0.1" in await unavailable(stack.client.prepare("vm-a/1/a"))
    assert (await stack.client.stat("vm-b/1/b")).kind == Kind.ACTIVE
    stack.resolver.start()
    await stack.client.prepare("vm-a/1/a")
    assert (await stack.client.stat("vm-a/1/a")).kind == Kind.ACTIVE


async def test_vsock_socket_missing(stack):
    await stack.client.prepare("vm-b/1/b")
    vm = stack.vms["vm-a"]
    await vm.vsock.stop()
    message = await unavailable(stack.client.prepare("vm-a/1/a"))
    assert f"{vm.vsock.uds_path} port {PORT}" in message and "No such file" in message
    assert (await stack.client.stat("vm-b/1/b")).kind == Kind.ACTIVE
    await vm.vsock.start()
    await stack.client.prepare("vm-a/1/a")
    assert (await stack.client.stat("vm-a/1/a")).kind == Kind.ACTIVE


async def test_connect_refused_by_firecracker(stack):
    await stack.client.prepare("vm-b/1/b")
    vm = stack.vms["vm-a"]
    vm.vsock.refuse = True
    failing = asyncio.create_task(unavailable(stack.client.prepare("vm-a/1/a")))
    assert (await stack.client.stat("vm-b/1/b")).kind == Kind.ACTIVE  # while vm-a's dial retries
    assert f"port {PORT} within 2s: connection closed before OK" in await failing
    vm.vsock.refuse = False
    await stack.client.prepare("vm-a/1/a")
    assert (await stack.client.stat("vm-a/1/a")).kind == Kind.ACTIVE


async def test_connection_dropped_mid_call(stack):
    await prepared(stack)
    vm = stack.vms["vm-a"]
    message = ""
    for _ in range(20):  # the cut may hit a frame grpc sends on its own (then the call is retried)
        vm.vsock.cut_next_request = True
        try:
            await stack.client.stat("vm-a/1/a")
        except UnavailableError as failure:
            message = str(failure)
            break
    assert f"{vm.vsock.uds_path} port {PORT}: connection closed by the VM" in message
    assert (await stack.client.stat("vm-b/1/b")).kind == Kind.ACTIVE
    await stack.recovers("vm-a/1/a")
    assert (await stack.client.stat("vm-a/1/a")).kind == Kind.ACTIVE


async def test_in_vm_snapshotter_killed_and_restarted(stack):
    await prepared(stack)
    vm = stack.vms["vm-a"]
    vm.snapshotter.kill()
    message = await unavailable(stack.client.stat("vm-a/1/a"))
    assert f"{vm.vsock.uds_path} port {PORT}" in message
    assert (await stack.client.stat("vm-b/1/b")).kind == Kind.ACTIVE
    # in a thread: waiting for it to listen must not stall this loop, which runs vm-b's vsock
    # stand-in (a stalled stand-in fails the demux's health poll and vm-b is dropped)
    await asyncio.to_thread(vm.start_snapshotter)
    await stack.recovers("vm-a/1/a")
    assert {i.name async for i in stack.client.walk()} >= {"vm-a/1/a", "vm-b/1/b"}


async def test_the_gc_walk_skips_a_dead_vm(stack):
    await prepared(stack)
    stack.vms["vm-a"].snapshotter.kill()
    assert {i.name async for i in stack.client.walk()} == {"vm-b/1/b"}


async def test_sigterm_drains_and_closes_every_vm_connection(stack):
    await prepared(stack)
    assert all(vm.vsock._live for vm in stack.vms.values())
    assert stack.demux.stop() == 0
    assert not (stack.folder / "demux.sock").exists()
    for vm in stack.vms.values():
        for _ in range(100):
            if not vm.vsock._live:
                break
            await asyncio.sleep(0.05)
        assert not vm.vsock._live


@pytest.mark.parametrize("demux_event_loop", ["asyncio", "uvloop"], indirect=True)
async def test_concurrent_first_calls_resolve_and_dial_once(stack):
    await asyncio.gather(*(stack.client.prepare(f"vm-a/{n}/k") for n in range(64)))
    assert stack.resolver.asked.count("vm-a") == 1
    assert stack.vms["vm-a"].vsock.accepted == 1  # one dial, one connection, 64 calls multiplexed on it
    assert len({i.name async for i in stack.client.walk()}) == 64


async def test_the_health_poll_drops_a_vanished_vm_by_itself(stack):
    await prepared(stack)
    await stack.vms["vm-a"].vsock.stop()
    log = stack.folder / "demux.log"
    deadline = time.monotonic() + 30
    while "namespace vm-a: health check failed" not in log.read_text(errors="replace"):
        assert time.monotonic() < deadline, log.read_text(errors="replace")[-2000:]
        await asyncio.sleep(0.1)
    assert stack.vms["vm-a"].vsock._server is None
    assert {i.name async for i in stack.client.walk()} == {"vm-b/1/b"}  # vm-a is no longer connected
    await stack.vms["vm-a"].vsock.start()
    assert (await stack.client.stat("vm-a/1/a")).kind == Kind.ACTIVE


async def test_a_paused_vm_is_dropped_by_the_health_poll_and_its_hung_call_fails(stack):
    await prepared(stack)
    vm = stack.vms["vm-a"]
    vm.vsock.pause()
    hung = asyncio.create_task(unavailable(stack.client.stat("vm-a/1/a")))
    assert (await stack.client.stat("vm-b/1/b")).kind == Kind.ACTIVE
    assert "connection closed (VM unhealthy" in await hung  # poll (0.5s) + probe timeout (2s) + grace (2s)
    vm.vsock.resume()
    await stack.recovers("vm-a/1/a")
    assert (await stack.client.stat("vm-a/1/a")).kind == Kind.ACTIVE


async def until(condition, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.1)


async def test_a_restarted_demux_dials_the_vms_it_knew_so_gc_still_reaches_them(stack):
    await prepared(stack)
    assert stack.demux.stop() == 0
    known = stack.folder / "known-namespaces.json"
    assert json.loads(known.read_text()) == {"namespaces": ["vm-a", "vm-b"]}
    del stack.resolver.addresses["vm-b"]  # vm-b's VM went away while the demux was down
    listen = str(stack.folder / "demux.sock")
    stack.demux.start(lambda: unix_socket_listening(listen))
    async with grpc.aio.insecure_channel(f"unix://{listen}") as channel:
        client = GrpcSnapshotService(channel, timeout=CLIENT_DEADLINE)

        async def gc_walk_sees_vm_a() -> bool:  # namespace-less, as containerd's GC; no call since the restart
            return {info.name async for info in client.walk()} == {"vm-a/1/a"}

        await until(gc_walk_sees_vm_a, "the restarted demux never reconnected vm-a")

    async def vm_b_forgotten() -> bool:
        return json.loads(known.read_text()) == {"namespaces": ["vm-a"]}

    await until(vm_b_forgotten, "vm-b, unknown to the resolver, stayed remembered")
