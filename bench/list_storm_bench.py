#!/usr/bin/env python3
"""A storm of concurrent Lists (issue 9, defect 3) and one costly filter (defect 2), against one or
two cvmfs-snapshotter commands side by side: how many Lists end OK, how long the storm takes, and
how long another client's Stat waits meanwhile.

    python3 bench/list_storm_bench.py [--snapshots 2000] [--lists 1000] [--channels 10]
        [--baseline "python3 -c '...old checkout...'"]

Each command gets its own root and socket, and the same workload: N snapshots, then L List
streams at once over C channels (sync client, one thread per stream, as the issue's client),
while a separate channel sends Stat calls one after another and records their latency.
"""

from __future__ import annotations

import argparse
import collections
import shlex
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from snapmux.adapters.pb.containerd.api.services.snapshots.v1 import snapshots_pb2 as pb
from snapmux.adapters.pb.containerd.api.services.snapshots.v1 import snapshots_pb2_grpc as pb_grpc

from tests.support.containerd import Daemon
from tests.support.sockets import unix_socket_listening

LOCAL = [("grpc.use_local_subchannel_pool", 1)]


def stats_during(stub: pb_grpc.SnapshotsStub, done: threading.Event) -> list[float]:
    latencies = []
    while not done.is_set():
        started = time.perf_counter()
        stub.Stat(pb.StatSnapshotRequest(key="k0"), timeout=600)
        latencies.append(time.perf_counter() - started)
    return latencies


def storm(sock: str, lists: int, channels: int) -> tuple[collections.Counter, float]:
    opened = [grpc.insecure_channel(f"unix://{sock}", options=LOCAL) for _ in range(channels)]
    stubs = [pb_grpc.SnapshotsStub(c) for c in opened]
    outcomes: collections.Counter = collections.Counter()

    def one(i: int) -> None:
        try:
            sum(len(r.info) for r in stubs[i % channels].List(pb.ListSnapshotsRequest()))
            outcomes["OK"] += 1
        except grpc.RpcError as error:
            outcomes[error.code().name] += 1

    started = time.perf_counter()
    with ThreadPoolExecutor(lists) as pool:
        list(pool.map(one, range(lists)))
    elapsed = time.perf_counter() - started
    for channel in opened:
        channel.close()
    return outcomes, elapsed


def costly_filter(stub: pb_grpc.SnapshotsStub, timeout: float) -> str:
    started = time.perf_counter()
    try:
        list(stub.List(pb.ListSnapshotsRequest(filters=["name~=(a+)+$"]), timeout=timeout))
        return f"OK in {time.perf_counter() - started:.3f}s"
    except grpc.RpcError as error:
        return f"{error.code().name} after {time.perf_counter() - started:.1f}s"


def run(command: list[str], label: str, args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="list-storm-") as work:
        sock = f"{work}/s.sock"
        daemon = Daemon([*command, "--root", f"{work}/root", "--address", sock, "--log-level", "warning"],
                        Path(work) / "log")
        daemon.start(lambda: unix_socket_listening(sock))
        try:
            with grpc.insecure_channel(f"unix://{sock}", options=LOCAL) as channel:
                stub = pb_grpc.SnapshotsStub(channel)
                with ThreadPoolExecutor(16) as pool:
                    list(pool.map(lambda i: stub.Prepare(pb.PrepareSnapshotRequest(key=f"k{i}")), range(args.snapshots)))
                stub.Prepare(pb.PrepareSnapshotRequest(key="a" * 28 + "!"))
                done = threading.Event()
                with ThreadPoolExecutor(1) as pool:
                    latencies = pool.submit(stats_during, stub, done)
                    outcomes, elapsed = storm(sock, args.lists, args.channels)
                    done.set()
                    latencies = sorted(latencies.result())
                print(f"{label}: {args.lists} Lists of {args.snapshots + 1}: {dict(outcomes)} in {elapsed:.1f}s; "
                      f"Stat meanwhile: n={len(latencies)} median {statistics.median(latencies) * 1000:.1f} ms, "
                      f"max {latencies[-1] * 1000:.0f} ms")
                print(f"{label}: name~=(a+)+$ against a{{28}}!: {costly_filter(stub, args.filter_timeout)}")
        finally:
            daemon.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--snapshots", type=int, default=2000)
    parser.add_argument("--lists", type=int, default=1000)
    parser.add_argument("--channels", type=int, default=10)
    parser.add_argument("--filter-timeout", type=float, default=30.0)
    parser.add_argument("--command", default="cvmfs-snapshotter")
    parser.add_argument("--baseline", help="another cvmfs-snapshotter command line, run first with the same workload")
    args = parser.parse_args()
    if args.baseline:
        run(shlex.split(args.baseline), "baseline", args)
    run(shlex.split(args.command), "this tree", args)


if __name__ == "__main__":
    main()
