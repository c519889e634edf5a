"""demux-snapshotter latency and memory: through the demux vs straight to the in-VM snapshotter.

    python bench/demux_bench.py [--seconds 1.5] [--rounds 3] [--before REV] [--namespaces 200]

Part 1, one VM: a cvmfs-snapshotter process behind a Firecracker vsock stand-in
process; the real http-address-resolver; a demux-snapshotter process. The Go load
client (bench/go/loadclient, containerd's proxy client, namespace as metadata) runs
stat, mounts, prepare (+commit+remove) and list, 1 and 64 clients, along these paths:
  plain : straight to the snapshotter's unix socket (no vsock at all)
  direct: through a VsockForwarder (its own process) + the stand-in: the demux's own path to the VM
  relay : `bench/grpc_relay.py`, a do-nothing raw-bytes pass-through over the same forwarder path
          (on uvloop, the event loop the demux runs on)
  demux : the demux, which routes by namespace through its forwarder + the stand-in
  before: (with --before REV) the demux of git revision REV, beside it in the same run
Reported: p50/p99 per path; demux/relay (target <= 1.1); the per-call overhead
(demux - direct) / (relay - direct), what the demux adds above a hop that does nothing.

Part 2, N namespaces: one process serving N vsock stand-ins in front of in-memory
snapshotters behind real gRPC; the demux connects to all N; reported: its RSS
(target < 100 MB) and stat latency across namespaces at 64 concurrent clients. (A Python
client, on purpose: it measures memory and fan-out, not per-call cost.)
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

from bench.harness import DEMUX_MAIN, STEPS, Cells, Target, at_revision, build, measure, ratio, table  # noqa: E402
from snapmux.adapters.grpc.client import GrpcSnapshotService  # noqa: E402
from snapmux.adapters.grpc.server import start_unix_snapshots_server  # noqa: E402
from snapmux.adapters.vsock.dialer import VsockDialer  # noqa: E402
from snapmux.adapters.vsock.forwarder import VsockForwarder  # noqa: E402
from tests.fakes.snapshots import InMemorySnapshotService  # noqa: E402
from tests.support.demux_stack import demux_config  # noqa: E402
from tests.support.firecracker_vsock import FirecrackerVsockStandIn  # noqa: E402
from tests.support.resolver import running_resolver  # noqa: E402

PORT = 10000
NAMESPACE = "bench"
GO_OPS = ("stat", "mounts", "prepare", "list")
CLIENTS = (1, 64)


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


def spawn(stack: ExitStack, argv: list[str], ready: str, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    with open(log, "ab") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=out, env={**os.environ, "PYTHONPATH": _pythonpath(), **(env or {})})
    stack.callback(_stop, process)
    wait_for_socket(ready, process)
    return process


def _pythonpath() -> str:
    """The repository (for tests.support) before whatever the caller set (a frozen `snapmux`, say)."""
    return os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)


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


def summary(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1000, ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000


async def forward(path: str, vsock: str, port: int) -> None:
    """Child process of part 1: one VsockForwarder, the "direct" path, off the demux's loop."""
    forwarder = await VsockForwarder(VsockDialer(vsock, port), path).start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await forwarder.close()


def start_paths(stack: ExitStack, work: Path, before: str | None) -> list[Target]:
    vm_sock, vsock = str(work / "vm.sock"), str(work / "v.sock")
    vm = spawn(stack, ["cvmfs-snapshotter", "--root", str(work / "vm-root"), "--address", vm_sock,
                       "--log-level", "warning"], vm_sock, work / "vm.log")
    spawn(stack, [sys.executable, "-m", "tests.support.firecracker_vsock", "--uds", vsock,
                  "--port", f"{PORT}={vm_sock}"], vsock, work / "standin.log")
    address = {"network": "unix", "address": vsock, "snapshotter_port": str(PORT)}
    resolver = stack.enter_context(running_resolver(work / "resolver", static={NAMESPACE: address}))
    paths = {name: str(work / f"{name}.sock") for name in ("direct", "relay", "demux", "before")}
    direct = spawn(stack, [sys.executable, __file__, "--forward", paths["direct"], vsock], paths["direct"],
                   work / "fwd.log")
    relay = spawn(stack, [sys.executable, str(REPO / "bench" / "grpc_relay.py"), "--listen", paths["relay"],
                          "--vsock", vsock, "--port", str(PORT), "--uvloop"], paths["relay"], work / "relay.log")
    demux_argv = ["--config", str(demux_config(work, paths["demux"], resolver.url)), "--log-level", "warning"]
    demux = spawn(stack, ["demux-snapshotter", *demux_argv], paths["demux"], work / "demux.log")
    # CPU time per call: each hop's own process (the VM's snapshotter for plain)
    targets = [Target("plain", vm_sock, pids=(vm.pid,)), Target("direct", paths["direct"], pids=(direct.pid,)),
               Target("relay", paths["relay"], pids=(relay.pid,)), Target("demux", paths["demux"], pids=(demux.pid,))]
    if before:
        (work / "before").mkdir()
        config = demux_config(work / "before", paths["before"], resolver.url)
        argv, env = at_revision(stack, before, DEMUX_MAIN, ["--config", str(config), "--log-level", "warning"])
        old_demux = spawn(stack, argv, paths["before"], work / "before.log", env)
        targets.append(Target("before", paths["before"], pids=(old_demux.pid,)))
    return targets


def run_go(binary: Path, seconds: float, rounds: int, before: str | None = None) -> None:
    """Part 1 with the Go client (hot_path_bench.py calls this too)."""
    work = Path(tempfile.mkdtemp(prefix="demux-bench-"))
    try:
        with ExitStack() as stack:
            targets = start_paths(stack, work, before)
            cells = measure(binary, targets, GO_OPS, CLIENTS, rounds, seconds, Cells())
            for clients in CLIENTS:
                print(go_report(cells, [t.name for t in targets], clients))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def go_report(cells: Cells, names: list[str], clients: int) -> str:
    rows, cpu_rows = [], []
    for op in GO_OPS:
        for step in STEPS[op]:
            p50 = {n: cells.figure(n, op, clients, step, "p50_ms") for n in names}
            p99 = {n: cells.figure(n, op, clients, step, "p99_ms") for n in names}
            overhead = ratio(p50["demux"] - p50["direct"], p50["relay"] - p50["direct"])
            rows.append([step, *(f"{p50[n]:.3f} / {p99[n]:.2f}" for n in names), ratio(p50["demux"], p50["relay"]),
                         overhead, ratio(p50["demux"], p50["direct"]),
                         *([ratio(p50["demux"], p50["before"])] if "before" in names else [])])
        cpu = {n: cells.figure(n, op, clients, STEPS[op][0], "cpu_us") for n in names}
        cpu_rows.append([op, *(f"{cpu[n]:.0f}" for n in names), ratio(cpu["demux"], cpu["relay"]),
                         *([ratio(cpu["demux"], cpu["before"])] if "before" in names else [])])
    extra = ["demux/before"] if "before" in names else []
    return (f"\ndemux, {clients} client(s): p50 / p99 latency in ms (Go client)\n\n"
            + table(["op", *names, "demux/relay", "overhead demux/relay", "demux/direct", *extra], rows)
            + f"\n\ndemux, {clients} client(s): CPU time per call of each hop's own process, us\n\n"
            + table(["op", *names, "demux/relay", *extra], cpu_rows))


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
                                  env={**os.environ, "PYTHONPATH": _pythonpath()})
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
    if args.forward:
        await forward(args.forward[0], args.forward[1], PORT)
        return
    if not args.no_part_one:
        run_go(build(), args.seconds, args.rounds, args.before)
    work = Path(tempfile.mkdtemp(prefix="demux-bench-"))
    try:
        await part_two(work, args.namespaces)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.5, help="measured seconds per cell and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before", help="git revision whose demux runs beside this checkout's")
    parser.add_argument("--no-part-one", action="store_true", help="only the N-namespaces memory part")
    parser.add_argument("--forward", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--namespaces", type=int, default=200)
    parser.add_argument("--serve-vms", help=argparse.SUPPRESS)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
