"""demux-snapshotter latency and memory: through the demux vs straight to the in-VM snapshotter.

    python bench/demux_bench.py [--iterations 30] [--namespaces 200]

Part 1, one VM: a cvmfs-snapshotter process behind a Firecracker vsock stand-in
process; the real http-address-resolver; a demux-snapshotter process. Clients run
prepare/stat/mounts/list/remove cycles, 1 and 64 at a time, along three paths:
  plain : gRPC straight to the snapshotter's unix socket (no vsock at all)
  direct: gRPC through our VsockForwarder + the stand-in (what the demux itself does)
  relay : gRPC to `bench/grpc_relay.py`, a do-nothing pass-through over the same forwarder path
  demux : gRPC to the demux, which routes by key prefix through its forwarder + the stand-in
Reported: median and p99 per operation, demux/direct median ratio (target <= 1.25),
demux/relay (the demux's own work above the floor of any Python gRPC proxy), and
direct/plain (the cost of the vsock path: forwarder + the Python stand-in).

Part 2, N namespaces: one process serving N vsock stand-ins in front of in-memory
snapshotters behind real gRPC; the demux connects to all N; reported: its RSS
(target < 100 MB) and stat latency across namespaces at 64 concurrent clients.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc  # noqa: E402

from snapmux.adapters.grpc.client import GrpcSnapshotService  # noqa: E402
from snapmux.adapters.grpc.server import start_unix_snapshots_server  # noqa: E402
from snapmux.adapters.vsock.connector import VsockSnapshotterConnector  # noqa: E402
from snapmux.domain.errors import NotFoundError  # noqa: E402
from snapmux.domain.model import SnapshotterAddress  # noqa: E402
from tests.fakes.snapshots import InMemorySnapshotService  # noqa: E402
from tests.support.demux_stack import demux_config  # noqa: E402
from tests.support.firecracker_vsock import FirecrackerVsockStandIn  # noqa: E402
from tests.support.resolver import running_resolver  # noqa: E402

PORT = 10000
OPS = ("prepare", "stat", "mounts", "list", "remove")


def wait_for_socket(path: str, process: subprocess.Popen, timeout: float = 60.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while True:
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{process.args} did not listen on {path}") from None
            time.sleep(0.05)
        finally:
            probe.close()


def spawn(stack: ExitStack, argv: list[str], ready: str, log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=out, env={**os.environ, "PYTHONPATH": str(REPO)})
    stack.callback(_stop, process)
    wait_for_socket(ready, process)
    return process


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


REPO = Path(__file__).resolve().parents[1]


async def cycle(client, key: str, timings: dict[str, list[float]]) -> None:
    """One snapshot's life, each call timed."""
    calls = (
        ("prepare", lambda: client.prepare(key)),
        ("stat", lambda: client.stat(key)),
        ("mounts", lambda: client.mounts(key)),
        ("list", lambda: _drain(client.walk([f"name=={key}"]))),
        ("remove", lambda: client.remove(key)),
    )
    for name, call in calls:
        start = time.perf_counter()
        await call()
        timings[name].append(time.perf_counter() - start)


async def _drain(infos) -> None:
    async for _ in infos:
        pass


async def run_clients(client, prefix: str, concurrency: int, iterations: int) -> dict[str, list[float]]:
    timings: dict[str, list[float]] = {op: [] for op in OPS}

    async def worker(w: int) -> None:
        for i in range(iterations):
            await cycle(client, f"{prefix}/{w}/k{i}", timings)

    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return timings


def summary(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1000, ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000


async def part_one(work: Path, iterations: int) -> None:
    with ExitStack() as stack:
        vm_sock, vsock = str(work / "vm.sock"), str(work / "v.sock")
        spawn(stack, ["cvmfs-snapshotter", "--root", str(work / "vm-root"), "--address", vm_sock,
                      "--log-level", "warning"], vm_sock, work / "vm.log")
        spawn(stack, [sys.executable, "-m", "tests.support.firecracker_vsock", "--uds", vsock,
                      "--port", f"{PORT}={vm_sock}"], vsock, work / "standin.log")
        address = {"network": "unix", "address": vsock, "snapshotter_port": str(PORT)}
        resolver = stack.enter_context(running_resolver(work / "resolver", static={"bench": address}))
        demux_sock = str(work / "demux.sock")
        demux = spawn(stack, ["demux-snapshotter", "--config", str(demux_config(work, demux_sock, resolver.url)),
                              "--log-level", "warning"], demux_sock, work / "demux.log")
        relay_sock = str(work / "relay.sock")
        spawn(stack, [sys.executable, str(REPO / "bench" / "grpc_relay.py"), "--listen", relay_sock,
                      "--vsock", vsock, "--port", str(PORT)], relay_sock, work / "relay.log")

        connector = VsockSnapshotterConnector(timeout=10, retry_interval=0.05)
        direct = await connector.connect("bench", SnapshotterAddress("unix", vsock, PORT))
        plain_channel = grpc.aio.insecure_channel(f"unix://{vm_sock}")
        demux_channel = grpc.aio.insecure_channel(f"unix://{demux_sock}")
        relay_channel = grpc.aio.insecure_channel(f"unix://{relay_sock}")
        paths = {"plain": GrpcSnapshotService(plain_channel), "direct": direct,
                 "relay": GrpcSnapshotService(relay_channel), "demux": GrpcSnapshotService(demux_channel)}
        try:
            for name, client in paths.items():  # warm up every path (connections, caches)
                await run_clients(client, f"bench/warm-{name}", 4, 3)
            for concurrency in (1, 64):
                rounds = max(3, iterations // (8 if concurrency > 1 else 1))
                results = {name: await run_clients(client, f"bench/{name}-{concurrency}", concurrency, rounds)
                           for name, client in paths.items()}
                report(concurrency, results)
            print(f"demux RSS with 1 VM: {rss_mb(demux.pid):.1f} MB")
        finally:
            await plain_channel.close()
            await demux_channel.close()
            await relay_channel.close()
            await direct.close()
            await connector.close()


def report(concurrency: int, results: dict[str, dict[str, list[float]]]) -> None:
    print(f"\n{concurrency} concurrent client(s): median / p99 in ms")
    print(f"{'op':8} " + " ".join(f"{name:>15}" for name in results)
          + f" {'demux/direct':>13} {'demux/relay':>12} {'direct/plain':>13}")
    for op in [*OPS, "all ops"]:
        samples = {name: [s for o in OPS for s in timings[o]] if op == "all ops" else timings[op]
                   for name, timings in results.items()}
        stats = {name: summary(values) for name, values in samples.items()}
        median = {name: m for name, (m, _) in stats.items()}
        print(f"{op:8} " + " ".join(f"{m:7.2f}/{p:7.2f}" for m, p in stats.values())
              + f" {median['demux'] / median['direct']:13.2f} {median['demux'] / median['relay']:12.2f}"
              + f" {median['direct'] / median['plain']:13.2f}")


async def serve_vms(folder: Path, count: int) -> None:
    """Child process of part 2: `count` vsock stand-ins, each in front of its own in-memory snapshotter."""
    servers, standins = [], []
    for n in range(count):
        sock = str(folder / f"vm{n}.sock")
        servers.append(await start_unix_snapshots_server(InMemorySnapshotService(), sock))
        standins.append(await FirecrackerVsockStandIn(str(folder / f"v{n}.sock"), {PORT: sock}).start())
    (folder / "ready").touch()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    for standin in standins:
        await standin.stop()


async def part_two(work: Path, count: int) -> None:
    vms = work / "vms"
    vms.mkdir()
    with ExitStack() as stack:
        helper = subprocess.Popen([sys.executable, __file__, "--serve-vms", str(vms), "--namespaces", str(count)],
                                  env={**os.environ, "PYTHONPATH": str(REPO)})
        stack.callback(_stop, helper)
        while not (vms / "ready").exists():
            if helper.poll() is not None:
                raise RuntimeError("VM helper died")
            time.sleep(0.1)
        static = {f"ns{n}": {"network": "unix", "address": str(vms / f"v{n}.sock"), "snapshotter_port": str(PORT)}
                  for n in range(count)}
        resolver = stack.enter_context(running_resolver(work / "resolver2", static=static))
        demux_sock = str(work / "demux2.sock")
        demux = spawn(stack, ["demux-snapshotter", "--config", str(demux_config(work, demux_sock, resolver.url)),
                              "--log-level", "warning"], demux_sock, work / "demux2.log")
        before = rss_mb(demux.pid)
        async with grpc.aio.insecure_channel(f"unix://{demux_sock}") as channel:
            client = GrpcSnapshotService(channel)
            await asyncio.gather(*(client.prepare(f"ns{n}/1/a") for n in range(count)))
            timings: list[float] = []

            async def worker() -> None:
                for _ in range(20):
                    key = f"ns{random.randrange(count)}/1/a"
                    start = time.perf_counter()
                    await client.stat(key)
                    timings.append(time.perf_counter() - start)

            await asyncio.gather(*(worker() for _ in range(64)))
            walked = [info async for info in client.walk()]
        median, p99 = summary(timings)
        print(f"\n{count} namespaces connected: demux RSS {before:.1f} MB idle -> {rss_mb(demux.pid):.1f} MB; "
              f"stat across namespaces at 64 clients: median {median:.2f} ms, p99 {p99:.2f} ms; "
              f"GC walk without namespace saw {len(walked)} snapshots")


async def main_async(args: argparse.Namespace) -> None:
    if args.serve_vms:
        await serve_vms(Path(args.serve_vms), args.namespaces)
        return
    work = Path(tempfile.mkdtemp(prefix="demux-bench-"))
    try:
        await part_one(work, args.iterations)
        await part_two(work, args.namespaces)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=30, help="snapshot cycles per client (1 client)")
    parser.add_argument("--namespaces", type=int, default=200)
    parser.add_argument("--serve-vms", help=argparse.SUPPRESS)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
