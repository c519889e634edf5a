#!/usr/bin/env python3
"""The demux's instructions per call against the do-nothing relay's, counted by callgrind.

    python bench/instructions_demux.py [--before REV] [--calls 2000] [--ops stat mounts prepare list] [--relay K ...]

The demux's target (demux CPU per call within 1.1x of bench/grpc_relay.py) is a few percent,
less than two identical daemons differ by on 2 shared cores (bench/demux_bench.py), so it is
settled here by a figure the load does not move (bench/instructions_bench.py's `count`). One
VM stands behind every target: bench/grpc_floor.py on uvloop (fixed answers: the VM's cost is
no part of the figure) behind a Firecracker vsock stand-in, found through the real
http-address-resolver. In front of it, each under callgrind in turn, only its process counted:
  relay   bench/grpc_relay.py on uvloop: forwards bytes, nothing else (Python's floor for a demux)
  demux   demux-snapshotter of this checkout, routing by the Go client's namespace metadata
  before  (--before REV) the demux of that revision
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import harness  # noqa: E402
from bench.harness import ratio, table  # noqa: E402
from bench.instructions_bench import count  # noqa: E402
from tests.support.containerd import Daemon  # noqa: E402
from tests.support.demux_stack import demux_config  # noqa: E402
from tests.support.resolver import running_resolver  # noqa: E402
from tests.support.sockets import unix_socket_listening  # noqa: E402

REPO = harness.REPO
PORT = 10000
NAMESPACE = "bench"  # bench/go/loadclient's default, sent as containerd-namespace metadata
QUIET_CACHE = '[snapshotter.cache]\npoll_connection_frequency = "1h"\n'  # no health probe among the counted calls
Targets = dict[str, tuple[list[str], dict[str, str] | None]]


def start_vm(stack: ExitStack, work: Path) -> str:
    """The VM every target forwards to; returns the URL of the resolver that names it."""
    vm, vsock = work / "vm.sock", work / "v.sock"
    for argv, ready, log in (
        ([sys.executable, str(REPO / "bench" / "grpc_floor.py"), "--listen", str(vm), "--uvloop"], vm, "vm.log"),
        ([sys.executable, "-m", "tests.support.firecracker_vsock", "--uds", str(vsock), "--port", f"{PORT}={vm}"],
         vsock, "standin.log"),
    ):
        daemon = Daemon(argv, work / log, {**os.environ, "PYTHONPATH": str(REPO)}).start(
            lambda ready=ready: unix_socket_listening(ready))
        stack.callback(daemon.stop)
    static = {NAMESPACE: {"network": "unix", "address": str(vsock), "snapshotter_port": str(PORT)}}
    return stack.enter_context(running_resolver(work / "resolver", static=static)).url


def targets(stack: ExitStack, work: Path, resolver: str, before: str | None) -> Targets:
    demux = lambda name: ["--config", str(demux_config(_folder(work, name), str(work / f"{name}.sock"), resolver,  # noqa: E731
                                                        QUIET_CACHE)), "--log-level", "warning"]
    found: Targets = {
        "relay": ([sys.executable, str(REPO / "bench" / "grpc_relay.py"), "--listen", str(work / "relay.sock"),
                   "--vsock", str(work / "v.sock"), "--port", str(PORT), "--uvloop"], None),
        "demux": ([*harness.python_main(harness.DEMUX_MAIN), *demux("demux")], None),
    }
    if before:
        found["before"] = harness.at_revision(stack, before, harness.DEMUX_MAIN, demux("before"))
    return found


def _folder(work: Path, name: str) -> Path:
    (work / name).mkdir(exist_ok=True)
    return work / name


def report(figures: dict[tuple[str, str], float], names: list[str], ops: list[str], calls: int) -> str:
    extra = ["demux/before"] if "before" in names else []
    rows = [[op, *(f"{figures[(n, op)] / 1000:.1f}" for n in names),
             ratio(figures[("demux", op)], figures[("relay", op)]),
             *([ratio(figures[("demux", op)], figures[("before", op)])] if extra else [])]
            for op in ops]
    return (f"\n1 client, {calls} calls: instructions per call of the demux/relay process, thousands"
            " (prepare: the mean of Prepare, Commit and Remove)\n\n"
            + table(["op", *names, "demux/relay", *extra], rows))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="git revision whose demux is counted beside this checkout's")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--ops", nargs="+", default=["stat", "mounts"], choices=list(harness.STEPS))
    parser.add_argument("--relay", type=float, nargs="+", metavar="THOUSANDS",
                        help="the relay's figures of an earlier run, one per op, instead of counting it again")
    args = parser.parse_args()
    binary = harness.build()
    print(f"instructions_demux {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {harness.machine()}")
    figures: dict[tuple[str, str], float] = {}
    with tempfile.TemporaryDirectory(prefix="instructions-demux-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        found = targets(stack, work, start_vm(stack, work), args.before)
        if args.relay:  # the relay's code is not what changes: counted once, its figures reused
            del found["relay"]
            figures |= {("relay", op): thousands * 1000 for op, thousands in zip(args.ops, args.relay, strict=True)}
        for op in args.ops:
            for name, (argv, env) in found.items():
                figures[(name, op)] = count(binary, work, name, argv, env, op, args.calls, fixed=True)[0]  # all threads
    print(report(figures, [*(['relay'] if args.relay else []), *found], args.ops, args.calls))
    return 0


if __name__ == "__main__":
    sys.exit(main())
