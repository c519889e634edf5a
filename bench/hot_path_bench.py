#!/usr/bin/env python3
"""The snapshotter's hot path against its Go peers and Python's floor, one Go client, one run.

    sudo python3 bench/hot_path_bench.py [--seconds 1.5] [--rounds 3] [--before REV] [--save NAME] [--no-demux]

Targets, each measured by bench/go/loadclient (containerd's snapshots/proxy client; a Go
client adds microseconds, so the server is what is measured), interleaved round by round:
  floor        bench/grpc_floor.py: a grpc.aio server answering fixed messages (Python's floor)
  floor-uv     the same on uvloop, the event loop the daemons run on
  cvmfs        the cvmfs-snapshotter daemon of this checkout, on its own unix socket
  before       (with --before REV) the same daemon from git revision REV, same run, same machine
  go-ref       containerd's overlayfs behind contrib/snapshotservice (bench/go/refsnapshotter)
  builtin@ctrd containerd's builtin overlayfs through containerd's own snapshots API
  cvmfs@ctrd   cvmfs-snapshotter as containerd's proxy plugin, through the same API
Operations: stat, mounts, prepare (Prepare+Commit+Remove, each reported), list (200 extra
snapshots populated); at 1 and 16 clients; `ctr run --rm` through containerd with each
snapshotter. Then the demux bench (bench/demux_bench.py)
unless --no-demux. Tables are markdown, for the README as printed; --save writes the text
and the raw rounds (JSON) under bench/results/.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack, redirect_stdout
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import harness  # noqa: E402
from bench.harness import Cells, Target, cvmfs_argv, ratio, table  # noqa: E402
from tests.support.containerd import Containerd, Daemon, import_busybox_image  # noqa: E402
from tests.support.sockets import unix_socket_listening  # noqa: E402

REPO = harness.REPO
OPS = ("stat", "mounts", "prepare", "list")
LIST_POPULATE = 200


def daemon(stack: ExitStack, argv: list[str], sock: Path, log: Path, env: dict[str, str] | None = None) -> int:
    """Starts one target's process; returns its pid (for CPU time per call)."""
    started = Daemon(argv, log, env).start(lambda: unix_socket_listening(sock))
    stack.callback(started.stop)
    assert started.process is not None
    return started.process.pid


def start_targets(stack: ExitStack, work: Path, binary: Path, before: str | None,
                  only: set[str]) -> tuple[list[Target], Containerd | None]:
    """Starts the targets named in `only` (all when empty); containerd too if one of its targets is."""
    wanted = lambda name: not only or name in only  # noqa: E731
    s = {name: work / f"{name}.sock" for name in ("floor", "cvmfs", "before", "goref", "proxied")}
    targets, ctrd = [], None
    for name, loop in (("floor", []), ("floor-uv", ["--uvloop"])):
        if wanted(name):
            sock = work / f"{name}.sock"
            pid = daemon(stack, [sys.executable, str(REPO / "bench" / "grpc_floor.py"), "--listen", str(sock),
                                 "--list-size", str(LIST_POPULATE + 1), *loop], sock, work / f"{name}.log")
            targets.append(Target(name, str(sock), fixed=True, pids=(pid,)))
    if wanted("cvmfs"):
        pid = daemon(stack, cvmfs_argv(work / "cvmfs-root", s["cvmfs"]), s["cvmfs"], work / "cvmfs.log")
        targets.append(Target("cvmfs", str(s["cvmfs"]), pids=(pid,)))
    if before and wanted("before"):
        argv, env = harness.at_revision(stack, before, harness.CVMFS_MAIN,
                                        cvmfs_argv(work / "before-root", s["before"])[1:])
        pid = daemon(stack, argv, s["before"], work / "before.log", env)
        targets.append(Target("before", str(s["before"]), pids=(pid,)))
    if wanted("go-ref"):
        pid = daemon(stack, [str(binary / "refsnapshotter"), "-root", str(work / "goref-root"),
                             "-address", str(s["goref"])], s["goref"], work / "goref.log")
        targets.append(Target("go-ref", str(s["goref"]), pids=(pid,)))
    if wanted("builtin@ctrd") or wanted("cvmfs@ctrd"):
        # its own instance: containerd's GC removes every snapshot of its proxy plugin that it did not make
        pid = daemon(stack, cvmfs_argv(work / "proxied-root", s["proxied"]), s["proxied"], work / "proxied.log")
        ctrd = stack.enter_context(Containerd.start(work / "containerd", proxy_snapshotters={"cvmfs": str(s["proxied"])}))
        ctrd_pid = ctrd.daemon.process.pid  # type: ignore[union-attr]
        targets += [Target("builtin@ctrd", ctrd.address, "overlayfs", pids=(ctrd_pid,)),
                    Target("cvmfs@ctrd", ctrd.address, "cvmfs", pids=(ctrd_pid, pid))]
    return targets, ctrd


def report(cells: Cells, targets: list[Target], clients: int, ops: list[str]) -> str:
    names = [t.name for t in targets]
    steps = [(op, step) for op in ops for step in harness.STEPS[op]]
    fig = lambda n, op, step, what: cells.figure(n, op, clients, step, what)  # noqa: E731
    latency = [[step, *(f"{fig(n, op, step, 'p50_ms'):.3f} / {fig(n, op, step, 'p99_ms'):.2f}" for n in names),
                ratio(fig("cvmfs", op, step, "p50_ms"), fig("floor", op, step, "p50_ms")),
                ratio(fig("cvmfs", op, step, "p50_ms"), fig("floor-uv", op, step, "p50_ms")),
                ratio(fig("cvmfs", op, step, "p50_ms"), fig("go-ref", op, step, "p50_ms")),
                ratio(fig("cvmfs@ctrd", op, step, "p50_ms"), fig("builtin@ctrd", op, step, "p50_ms"))]
               + ([ratio(fig("cvmfs", op, step, "p50_ms"), fig("before", op, step, "p50_ms"))] if "before" in names else [])
               for op, step in steps]
    extra = ["cvmfs/before"] if "before" in names else []
    out = [f"\n{clients} client(s): p50 / p99 latency in ms (ratios of p50)\n",
           table(["op", *names, "cvmfs/floor", "cvmfs/floor-uv", "cvmfs/go-ref", "@ctrd cvmfs/builtin", *extra],
                 latency)]
    thr = [[step, *(f"{fig(n, op, step, 'throughput_per_s'):.0f}" for n in names),
            ratio(fig("cvmfs", op, step, "throughput_per_s"), fig("floor", op, step, "throughput_per_s")),
            ratio(fig("cvmfs", op, step, "throughput_per_s"), fig("floor-uv", op, step, "throughput_per_s")),
            ratio(fig("cvmfs", op, step, "throughput_per_s"), fig("go-ref", op, step, "throughput_per_s"))]
           + ([ratio(fig("cvmfs", op, step, "throughput_per_s"), fig("before", op, step, "throughput_per_s"))]
              if "before" in names else [])
           for op, step in steps]
    out += [f"\n{clients} client(s): throughput in calls/s\n",
            table(["op", *names, "cvmfs/floor", "cvmfs/floor-uv", "cvmfs/go-ref", *extra], thr)]
    cpu = [[step, *(f"{fig(n, op, step, 'cpu_us'):.0f}" for n in names),
            ratio(fig("cvmfs", op, step, "cpu_us"), fig("floor", op, step, "cpu_us")),
            ratio(fig("cvmfs", op, step, "cpu_us"), fig("floor-uv", op, step, "cpu_us")),
            ratio(fig("cvmfs", op, step, "cpu_us"), fig("go-ref", op, step, "cpu_us"))]
           + ([ratio(fig("cvmfs", op, step, "cpu_us"), fig("before", op, step, "cpu_us"))] if "before" in names else [])
           for op, step in steps if step == first_step(op)]
    out += [f"\n{clients} client(s): server CPU time per call in us (all threads; prepare: per step of the cycle)\n",
            table(["op", *names, "cvmfs/floor", "cvmfs/floor-uv", "cvmfs/go-ref", *extra], cpu)]
    return "\n".join(out)


def ctr_runs(ctrd: Containerd | None, work: Path, runs: int) -> str:
    """What users feel: `ctr run --rm` of a one-layer busybox image, builtin overlayfs vs cvmfs-snapshotter,
    alternating."""
    if ctrd is None or runs <= 0:
        return ""
    seconds: dict[str, list[float]] = {"overlayfs": [], "cvmfs": []}
    images = {name: import_busybox_image(ctrd, work / f"image-{name}", snapshotter=name) for name in seconds}
    for n in range(runs):
        for name, samples in seconds.items():
            started = time.perf_counter()
            ctrd.ctr("run", "--rm", "--snapshotter", name, images[name], f"bench-{name}-{n}", "true")
            samples.append(time.perf_counter() - started)
    builtin, ours = (statistics.median(seconds[name]) * 1e3 for name in ("overlayfs", "cvmfs"))
    rows = [["ctr run --rm", f"{builtin:.0f}", f"{ours:.0f}", ratio(ours, builtin)]]
    return (f"\nctr run --rm busybox true, median of {runs} alternating runs, ms\n\n"
            + table(["what", "builtin overlayfs", "cvmfs-snapshotter", "cvmfs/builtin"], rows))


def first_step(op: str) -> str:
    """CPU time is measured per run, not per step: one row per operation."""
    return harness.STEPS[op][0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.5, help="measured seconds per cell and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--ops", nargs="+", default=list(OPS), choices=OPS)
    parser.add_argument("--before", help="git revision whose cvmfs-snapshotter runs beside this checkout's")
    parser.add_argument("--save", help="name for bench/results/NAME.{txt,json}")
    parser.add_argument("--no-demux", action="store_true")
    parser.add_argument("--targets", nargs="+", default=[], help="measure only these (names above)")
    parser.add_argument("--ctr-runs", type=int, default=7, help="`ctr run --rm` per snapshotter (0: none)")
    parser.add_argument("--gap-ms", type=float, default=0.0,
                        help="quiet time before each call or prepare cycle, unmeasured (an idle daemon, as"
                             " ctr run finds it)")
    args = parser.parse_args()
    binary = harness.build()
    text = io.StringIO()
    header = f"hot_path_bench {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {harness.machine()}"
    header += f", {args.gap_ms:g} ms quiet before each call or cycle" if args.gap_ms else ""
    print(header)
    cells = Cells()
    with tempfile.TemporaryDirectory(prefix="hot-path-bench-") as tmp, ExitStack() as stack:
        targets, ctrd = start_targets(stack, Path(tmp), binary, args.before, set(args.targets))
        harness.measure(binary, targets, args.ops, args.clients, args.rounds, args.seconds, cells, LIST_POPULATE,
                        args.gap_ms)
        for clients in args.clients:
            print(section := report(cells, targets, clients, args.ops))
            text.write(section + "\n")
        print(section := ctr_runs(ctrd, Path(tmp), args.ctr_runs))
        text.write(section + "\n")
    if not args.no_demux:
        from bench import demux_bench

        with redirect_stdout(Tee(text)):
            demux_bench.run_go(binary, args.seconds, args.rounds, args.before)
    if args.save:
        results = REPO / "bench" / "results"
        results.mkdir(parents=True, exist_ok=True)
        (results / f"{args.save}.txt").write_text(header + "\n" + text.getvalue())
        (results / f"{args.save}.json").write_text(json.dumps(cells.as_json(), indent=1))
        print(f"\nsaved bench/results/{args.save}.txt and .json")
    return 0


class Tee(io.TextIOBase):
    """Prints and keeps (for --save) what the demux part prints."""

    def __init__(self, keep: io.StringIO) -> None:
        self._keep, self._out = keep, sys.stdout

    def write(self, text: str) -> int:
        self._keep.write(text)
        return self._out.write(text)


if __name__ == "__main__":
    sys.exit(main())
