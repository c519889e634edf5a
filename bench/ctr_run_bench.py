#!/usr/bin/env python3
"""What users feel: `ctr run --rm` through containerd, builtin overlayfs against proxy snapshotters.

    sudo python3 bench/ctr_run_bench.py [--runs 25] [--before REV] [--no-go-ref]

One containerd, one busybox image unpacked into each snapshotter (its own image name, so
containerd's GC keeps every unpack), then rounds in which each snapshotter runs once in
turn, so the shared machine's noise lands on all alike:
  overlayfs  containerd's builtin overlayfs (in-process: no gRPC hop at all)
  cvmfs      this checkout's cvmfs-snapshotter as a proxy plugin
  before     (with --before REV) the cvmfs-snapshotter of git revision REV, same run
  go-ref     containerd's overlayfs behind contrib/snapshotservice as a proxy plugin: what any
             out-of-process snapshotter costs through containerd, beside what Python adds
Each run is split into the calls ctr makes (`container create`: Stat of the image's chain,
Prepare, Mounts for the temporary mount that reads /etc/group; `task start`: Mounts, the
mount, runc; `container rm`), and timed whole (`run --rm`). A snapshotter's Remove and
Cleanup come later, from containerd's GC, off the measured path. Medians and p90 in ms,
and each proxy's ratio to the builtin.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import harness  # noqa: E402
from bench.harness import cvmfs_argv, ratio, table  # noqa: E402
from tests.support.containerd import Containerd, Daemon, build_busybox_image  # noqa: E402
from tests.support.sockets import unix_socket_listening  # noqa: E402

PHASES = ("create", "start", "rm", "run --rm")


def proxies(stack: ExitStack, work: Path, before: str | None, go_ref: bool) -> dict[str, str]:
    """Starts each proxy snapshotter; returns name -> socket."""
    argvs: dict[str, tuple[list[str], dict[str, str] | None]] = {
        "cvmfs": (cvmfs_argv(work / "cvmfs-root", work / "cvmfs.sock"), None)}
    if before:
        argvs["before"] = harness.at_revision(stack, before, harness.CVMFS_MAIN,
                                              cvmfs_argv(work / "before-root", work / "before.sock")[1:])
    if go_ref:
        binary = harness.build()
        argvs["go-ref"] = ([str(binary / "refsnapshotter"), "-root", str(work / "go-ref-root"),
                            "-address", str(work / "go-ref.sock")], None)
    sockets = {}
    for name, (argv, env) in argvs.items():
        sock = work / f"{name}.sock"
        started = Daemon(argv, work / f"{name}.log", env).start(lambda sock=sock: unix_socket_listening(sock))
        stack.callback(started.stop)
        sockets[name] = str(sock)
    return sockets


def timed(ctrd: Containerd, *args: str) -> float:
    started = time.perf_counter()
    ctrd.ctr(*args)
    return (time.perf_counter() - started) * 1e3


def one_round(ctrd: Containerd, images: dict[str, str], n: int, samples: dict[tuple[str, str], list[float]]) -> None:
    """Each snapshotter once, the order rotated by round (containerd's GC of one lands on the next)."""
    order = list(images.items())
    for name, image in order[n % len(order):] + order[:n % len(order)]:
        box = f"{name}-{n + 1}"
        samples[(name, "create")].append(timed(ctrd, "container", "create", "--snapshotter", name, image, box, "true"))
        samples[(name, "start")].append(timed(ctrd, "task", "start", box))
        samples[(name, "rm")].append(timed(ctrd, "container", "rm", box))
        samples[(name, "run --rm")].append(timed(ctrd, "run", "--rm", "--snapshotter", name, image, f"r{box}", "true"))


def report(samples: dict[tuple[str, str], list[float]], names: list[str]) -> str:
    p50 = lambda name, phase: statistics.median(samples[(name, phase)])  # noqa: E731
    p90 = lambda name, phase: sorted(samples[(name, phase)])[int(len(samples[(name, phase)]) * 0.9)]  # noqa: E731
    others = [name for name in names if name != "overlayfs"]
    rows = [[phase, *(f"{p50(name, phase):.1f} / {p90(name, phase):.1f}" for name in names),
             *(ratio(p50(name, phase), p50("overlayfs", phase)) for name in others)]
            + ([ratio(p50("cvmfs", phase), p50("before", phase))] if "before" in names else [])
            for phase in PHASES]
    extra = ["cvmfs/before"] if "before" in names else []
    return table(["phase", *names, *(f"{name}/overlayfs" for name in others), *extra], rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=25, help="rounds (each snapshotter once per round)")
    parser.add_argument("--before", help="git revision whose cvmfs-snapshotter runs beside this checkout's")
    parser.add_argument("--no-go-ref", action="store_true", help="skip the Go reference proxy")
    args = parser.parse_args()
    print(f"ctr_run_bench {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {harness.machine()}")
    with tempfile.TemporaryDirectory(prefix="ctr-run-bench-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        sockets = proxies(stack, work, args.before, not args.no_go_ref)
        ctrd = stack.enter_context(Containerd.start(work / "containerd", proxy_snapshotters=sockets))
        archive = build_busybox_image(work / "image")
        images = {}
        for name in ("overlayfs", *sockets):
            base = f"docker.io/library/bench-{name}"
            ctrd.ctr("images", "import", "--base-name", base, "--snapshotter", name, str(archive))
            images[name] = f"{base}:latest"
        samples: dict[tuple[str, str], list[float]] = {(n, p): [] for n in images for p in PHASES}
        one_round(ctrd, images, -1, {key: [] for key in samples})  # warm-up: first mounts, page cache
        for n in range(args.runs):
            one_round(ctrd, images, n, samples)
        print(f"\n`ctr` through containerd, p50 / p90 of {args.runs} alternating rounds, ms\n")
        print(report(samples, list(images)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
