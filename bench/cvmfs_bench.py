#!/usr/bin/env python3
"""Pull-to-exit time of a container: layers published in the CVMFS layout vs a normal pull.

For each image size (default 100 and 500 MB of incompressible random files, fixed seed,
several layers) the image is built, pushed to a private docker-registry on 127.0.0.1 and
published into a temp layout. Each run starts a fresh containerd and cvmfs-snapshotter
(not timed), then times, through the same snapshotter:

    published: ctr-remote images rpull (remote-snapshot labels) + ctr run --rm
    normal:    ctr images pull (download + unpack)             + ctr run --rm

and prints the median of the runs, the speed-up, and how each grows from the smallest
to the largest size. Everything lives under one temp dir, deleted at the end (peak disk
use is about 5x the largest image). Needs root and the integration tools.

    sudo python3 bench/cvmfs_bench.py [--sizes 100 500] [--runs 3] [--layers 5]
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.containerd import Containerd, Daemon, wait_until  # noqa: E402
from tests.support.images import random_image  # noqa: E402
from tests.support.registry import Registry  # noqa: E402
from tests.support.sockets import unix_socket_listening  # noqa: E402

SNAPSHOTTER = "cvmfs"


@contextlib.contextmanager
def fresh_node(work: Path, layout: Path, extra_config: str = ""):
    """A new snapshotter root and containerd for one run, so no run sees another's cache (or scans)."""
    work.mkdir(parents=True)
    socket_path = str(work / "snapshotter.sock")
    config = work / "snapshotter.toml"
    config.write_text(f'root = "{work / "snap-root"}"\naddress = "{socket_path}"\n'
                      f'absolute-mountpoint = "{layout}"\nlog-level = "warning"\n{extra_config}')
    snapshotter = Daemon(["cvmfs-snapshotter", "--config", str(config)], work / "snapshotter.log")
    snapshotter.start(lambda: unix_socket_listening(socket_path))
    try:
        with Containerd.start(work / "containerd", {SNAPSHOTTER: socket_path}) as containerd:
            yield containerd
    finally:
        snapshotter.kill()
        shutil.rmtree(work, ignore_errors=True)


def timed_run(containerd: Containerd, reference: str, published: bool) -> float:
    base = ["--address", containerd.address, "--namespace", containerd.namespace]
    pull = (["ctr-remote", *base, "images", "rpull"] if published else ["ctr", *base, "images", "pull"])
    start = time.monotonic()
    subprocess.run([*pull, "--plain-http", "--snapshotter", SNAPSHOTTER, reference],
                   check=True, capture_output=True, timeout=1800)
    done = containerd.ctr("run", "--rm", "--snapshotter", SNAPSHOTTER, reference, "bench", timeout=600)
    elapsed = time.monotonic() - start
    assert done.stdout.strip() == "done", done.stdout
    return elapsed


def prepare_image(root: Path, registry: Registry, size_mb: int, layers: int) -> str:
    started = time.monotonic()
    image = random_image(str(root / f"oci-{size_mb}"), "bench", size_mb, layers, seed=size_mb)
    reference = registry.push(image.layout, image.tag, f"bench/random-{size_mb}:bench")
    shutil.rmtree(image.layout)
    subprocess.run(["cvmfs-snapshotter", "publish", "--plain-http", "--target", str(root / "layout"), reference],
                   check=True, capture_output=True, timeout=1800)
    print(f"  built, pushed and published {size_mb} MB in {time.monotonic() - started:.1f}s", flush=True)
    return reference


def measure(root: Path, reference: str, runs: int) -> dict[str, float]:
    results: dict[str, list[float]] = {"published": [], "normal": []}
    for run in range(runs):
        for mode in results:
            with fresh_node(root / f"node-{mode}-{run}", root / "layout") as containerd:
                results[mode].append(timed_run(containerd, reference, mode == "published"))
    for mode, times in results.items():
        print(f"    {mode:9s} runs: {', '.join(f'{t:.2f}s' for t in times)}", flush=True)
    return {mode: statistics.median(times) for mode, times in results.items()}


def report(medians: dict[int, dict[str, float]]) -> None:
    sizes = sorted(medians)
    print("\n  size    published    normal    speed-up")
    for size in sizes:
        row = medians[size]
        print(f"  {size:4d} MB  {row['published']:8.2f}s  {row['normal']:8.2f}s  {row['normal'] / row['published']:8.1f}x")
    if len(sizes) > 1:
        small, large = medians[sizes[0]], medians[sizes[-1]]
        print(f"\n  growth {sizes[0]} -> {sizes[-1]} MB: published x{large['published'] / small['published']:.2f},"
              f" normal x{large['normal'] / small['normal']:.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 500], help="image sizes in MB")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--layers", type=int, default=5, help="random-data layers per image")
    parser.add_argument("--workdir", default=None, help="parent of the temp dir (default: system temp)")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="cvmfs-bench-", dir=args.workdir))
    medians: dict[int, dict[str, float]] = {}
    try:
        with Registry.start(root / "registry") as registry:
            for size in sorted(args.sizes):
                print(f"image of {size} MB in {args.layers} random layers (+ busybox):", flush=True)
                reference = prepare_image(root, registry, size, args.layers)
                medians[size] = measure(root, reference, args.runs)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report(medians)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
