#!/usr/bin/env python3
"""cvmfs-snapshotter vs containerd's builtin overlayfs snapshotter: same client, same workload.

All are driven over containerd's snapshots gRPC API with `GrpcSnapshotService`:
the cvmfs-snapshotter daemon (OverlaySnapshotter under the CVMFS decorator) and
the bare OverlaySnapshotter core (served by this script in a child process), each
on its own unix socket, and the builtin one through containerd's main socket
(`snapshotter="overlayfs"`, namespace sent as `containerd-namespace`).
Each client loops prepare (on a committed parent) -> mounts -> commit -> stat ->
remove; we print per-operation median and p99 latency and the ratio (target: <= 1.5x).

    sudo python3 bench/snapshotter_bench.py [--iterations 200] [--clients 1 16]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from snapmux.adapters.grpc.client import GrpcSnapshotService
from snapmux.domain.labels import GC_ROOT_LABEL
from snapmux.domain.namespaces import current_namespace

from tests.support.containerd import Containerd, Daemon
from tests.support.sockets import unix_socket_listening

OPERATIONS = ("prepare", "mounts", "commit", "stat", "remove")
NAMESPACE = "bench"
GC_ROOT = {GC_ROOT_LABEL: "2026-01-01T00:00:00Z"}
"""Keeps containerd's garbage collector off our snapshots (as containerd's own test suite does)."""


async def client_loop(client: GrpcSnapshotService, prefix: str, iterations: int, samples: dict[str, list[float]]) -> None:
    current_namespace.set(NAMESPACE)
    for n in range(iterations):
        key, name = f"{prefix}-active-{n}", f"{prefix}-committed-{n}"
        steps = (
            ("prepare", client.prepare, (key, "bench-base", GC_ROOT)),
            ("mounts", client.mounts, (key,)),
            ("commit", client.commit, (name, key, GC_ROOT)),
            ("stat", client.stat, (name,)),
            ("remove", client.remove, (name,)),
        )
        for op, call, args in steps:
            started = time.perf_counter()
            await call(*args)
            samples[op].append(time.perf_counter() - started)


async def measure(target: str, snapshotter: str, clients: int, iterations: int) -> dict[str, list[float]]:
    current_namespace.set(NAMESPACE)
    samples: dict[str, list[float]] = defaultdict(list)
    async with grpc.aio.insecure_channel(target) as channel:
        client = GrpcSnapshotService(channel, snapshotter)
        if not [i async for i in client.walk(["name==bench-base"])]:
            await client.prepare("bench-base-active", "", GC_ROOT)
            await client.commit("bench-base", "bench-base-active", GC_ROOT)
        await client_loop(client, f"warmup-{clients}", 10, defaultdict(list))
        await asyncio.gather(*(client_loop(client, f"c{clients}-{i}", iterations, samples) for i in range(clients)))
    return samples


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def report(title: str, clients: int, ours: dict[str, list[float]], builtin: dict[str, list[float]]) -> None:
    print(f"\n{title}: {clients} concurrent client(s), {len(ours['stat'])} samples per operation (ms)")
    print(f"{'operation':<10}{'ours p50':>11}{'builtin p50':>13}{'ratio':>7}{'ours p99':>11}{'builtin p99':>13}{'ratio':>7}")
    for op in OPERATIONS:
        a50, b50 = statistics.median(ours[op]) * 1e3, statistics.median(builtin[op]) * 1e3
        a99, b99 = p99(ours[op]) * 1e3, p99(builtin[op]) * 1e3
        print(f"{op:<10}{a50:>11.2f}{b50:>13.2f}{a50 / b50:>7.2f}{a99:>11.2f}{b99:>13.2f}{a99 / b99:>7.2f}")


async def serve_core(kind: str, root: str, sock: str) -> None:
    """The OverlaySnapshotter alone (or, as the floor of Python gRPC, the in-memory fake) behind the
    same gRPC server the daemon uses."""
    import signal

    from snapmux.adapters.grpc.server import start_unix_snapshots_server
    from snapmux.adapters.local.snapshotter import OverlaySnapshotter

    from tests.fakes.snapshots import InMemorySnapshotService

    snapshotter = await OverlaySnapshotter.open(root) if kind == "core" else InMemorySnapshotService()
    server = await start_unix_snapshots_server(snapshotter, sock)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(5)
    if isinstance(snapshotter, OverlaySnapshotter):
        await snapshotter.close()


def start_daemon(argv: list[str], sock: Path, log: Path) -> Daemon:
    return Daemon(argv, log).start(lambda: unix_socket_listening(sock))


def run_all(base: Path, containerd: Containerd, clients_list: list[int], iterations_total: int) -> None:
    daemon_sock, core_sock, fake_sock = base / "cvmfs.sock", base / "core.sock", base / "fake.sock"
    daemon = start_daemon(["cvmfs-snapshotter", "--root", str(base / "cvmfs-root"), "--address", str(daemon_sock),
                           "--log-level", "warning"], daemon_sock, base / "cvmfs.log")
    core = start_daemon([sys.executable, __file__, "--serve", "core", str(base / "core-root"), str(core_sock)],
                        core_sock, base / "core.log")
    fake = start_daemon([sys.executable, __file__, "--serve", "fake", "", str(fake_sock)], fake_sock, base / "fake.log")
    try:
        for clients in clients_list:
            iterations = max(10, iterations_total // clients)
            builtin = asyncio.run(measure(f"unix://{containerd.address}", "overlayfs", clients, iterations))
            for label, sock, name in (("cvmfs-snapshotter daemon", daemon_sock, "cvmfs"),
                                      ("OverlaySnapshotter core", core_sock, "core"),
                                      ("floor: in-memory fake, same Python gRPC server", fake_sock, "fake")):
                ours = asyncio.run(measure(f"unix://{sock}", name, clients, iterations))
                report(f"{label} vs builtin overlayfs", clients, ours, builtin)
    finally:
        for process in (daemon, core, fake):
            process.stop()


def main() -> int:
    if sys.argv[1:2] == ["--serve"]:
        asyncio.run(serve_core(sys.argv[2], sys.argv[3], sys.argv[4]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=200, help="loops per client (divided by clients)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="snapshotter-bench-") as tmp:
        with Containerd.start(Path(tmp) / "containerd") as containerd:
            run_all(Path(tmp), containerd, args.clients, args.iterations)
    return 0


if __name__ == "__main__":
    sys.exit(main())
