#!/usr/bin/env python3
"""Server instructions per call, counted by valgrind's callgrind: a figure the machine's load does not move.

    python bench/instructions_bench.py [--before REV] [--calls 2000] [--ops stat mounts]

On 2 shared cores, times and CPU per call (bench/hot_path_bench.py) swing by 10-15% from one run
to the next; the instructions a server executes per call repeat within a few percent, so a change of a
few microseconds per call shows. Each target runs under callgrind with instrumentation off until a
warm-up run of bench/go/loadclient is done; then one client makes --calls calls, and the figure is
the process's instructions (all threads, setup of the run's snapshots included) over those calls,
and beside it those of the event loop's thread alone ("loop"): gRPC core's own threads wake by the
clock as well as by the calls, so their share moves by several thousand per call from one run to
the next with the machine's load, while the loop thread's repeats within a few hundred.
Targets: floor-uv (bench/grpc_floor.py on uvloop: Python's floor), cvmfs (this checkout), before
(--before REV, the same daemon from that revision).
"""

from __future__ import annotations

import argparse
import datetime
import glob
import json
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import harness  # noqa: E402
from bench.harness import cvmfs_argv, ratio, table  # noqa: E402
from tests.support.containerd import Daemon  # noqa: E402
from tests.support.sockets import unix_socket_listening  # noqa: E402

REPO = harness.REPO
STARTUP_SECONDS = 600.0  # a daemon under callgrind starts some 50 times slower


def argvs(work: Path, before: str | None, stack: ExitStack) -> dict[str, tuple[list[str], dict[str, str] | None]]:
    cvmfs = lambda name: cvmfs_argv(work / f"{name}-root", work / f"{name}.sock")[1:]  # noqa: E731
    targets = {
        "floor-uv": ([sys.executable, str(REPO / "bench" / "grpc_floor.py"), "--listen", str(work / "floor-uv.sock"),
                      "--uvloop"], None),
        "cvmfs": ([*harness.python_main(harness.CVMFS_MAIN), *cvmfs("cvmfs")], None),
    }
    if before:
        targets["before"] = harness.at_revision(stack, before, harness.CVMFS_MAIN, cvmfs("before"))
    return targets


def count(binary: Path, work: Path, name: str, argv: list[str], env: dict[str, str] | None, op: str,
          calls: int, fixed: bool | None = None) -> tuple[float, float]:
    """Instructions per call of one target for one operation, all threads and the loop's (a fresh process
    each time), listening on WORK/NAME.sock. `fixed`: the calls reach a server answering fixed messages
    (nothing to set up); by default only the floor does."""
    out = work / f"{name}-{op}"
    out.mkdir()
    sock = work / f"{name}.sock"
    sock.unlink(missing_ok=True)  # the floor leaves its socket behind
    grind = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--separate-threads=yes",
             f"--callgrind-out-file={out}/cg.%p", *argv]
    daemon = Daemon(grind, out / "log", env).start(lambda: unix_socket_listening(sock), STARTUP_SECONDS)
    try:
        assert daemon.process is not None
        pid = str(daemon.process.pid)
        load = [str(binary / "loadclient"), "-address", str(sock), "-op", op, "-clients", "1", "-warmup", "0s"]
        if name == "floor-uv" if fixed is None else fixed:
            load.append("-no-setup")
        subprocess.run([*load, "-count", "20"], check=True, stdout=subprocess.DEVNULL, timeout=600)
        subprocess.run(["callgrind_control", "-i", "on", pid], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        done = subprocess.run([*load, "-count", str(calls)], check=True, stdout=subprocess.PIPE, text=True,
                              timeout=3600)
        subprocess.run(["callgrind_control", "-i", "off", pid], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        subprocess.run(["callgrind_control", "-d", pid], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
    finally:
        daemon.stop(120)
    answered = sum(step["count"] for step in json.loads(done.stdout)["steps"].values())
    threads = _totals(out)
    return sum(threads.values()) / answered, threads["01"] / answered


def _totals(out: Path) -> dict[str, int]:
    """Each thread's `totals:` line of the dump callgrind_control -d wrote (`cg.PID.1-NN`; 01 is the main thread,
    which runs the event loop)."""
    totals = {}
    for dump in glob.glob(str(out / "cg.*.1-*")):
        for line in Path(dump).read_text().splitlines():
            if line.startswith("totals:"):
                totals[dump.rsplit("-", 1)[1]] = int(line.split()[1])
    if "01" not in totals:
        raise RuntimeError(f"no main thread's totals under {out}")
    return totals


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="git revision whose cvmfs-snapshotter is counted beside this checkout's")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--ops", nargs="+", default=["stat", "mounts"], choices=["stat", "mounts"])
    args = parser.parse_args()
    binary = harness.build()
    print(f"instructions_bench {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {harness.machine()}")
    figures: dict[tuple[str, str], tuple[float, float]] = {}
    with tempfile.TemporaryDirectory(prefix="instructions-bench-") as tmp, ExitStack() as stack:
        targets = argvs(Path(tmp), args.before, stack)
        for op in args.ops:
            for name, (argv, env) in targets.items():
                figures[(name, op)] = count(binary, Path(tmp), name, argv, env, op, args.calls)
    names = list(targets)
    for part, title in ((0, "server instructions per call (all threads)"), (1, "instructions per call of the loop thread")):
        rows = [[op, *(f"{figures[(n, op)][part] / 1000:.1f}" for n in names),
                 ratio(figures[("cvmfs", op)][part], figures[("floor-uv", op)][part]),
                 *([ratio(figures[("cvmfs", op)][part], figures[("before", op)][part])] if "before" in names else [])]
                for op in args.ops]
        print(f"\n1 client, {args.calls} calls: {title}, thousands\n")
        print(table(["op", *names, "cvmfs/floor-uv", *(["cvmfs/before"] if "before" in names else [])], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
