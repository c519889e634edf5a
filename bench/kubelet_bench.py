#!/usr/bin/env python3
"""Time to a running pod as a kubelet sees it: from PullImage to a started container.

Each timed run makes the kubelet's CRI calls against containerd 1.6's CRI plugin (namespace
k8s.io, host network, a sandbox image imported beforehand): PullImage, RunPodSandbox,
CreateContainer, StartContainer, then ContainerStatus until the container runs. Between runs
the pods are deleted and the images removed (RemoveImage, containerd's GC), so every run
pulls afresh (the content store is collected too), and nothing is timed but the pod start.
Images: busybox plus N layers of incompressible random data (fixed seeds), about SIZE MB,
pushed to one docker-registry on 127.0.0.1 and published into one layout. Three nodes, one
after the other, each its own containerd with CRI's snapshotter set to:

    published:  cvmfs-snapshotter with the layout: layers served in place
    plain:      cvmfs-snapshotter with an empty layout: download + unpack
    overlayfs:  containerd's builtin overlayfs snapshotter: download + unpack

Single pod: median of --runs runs. Concurrent: --concurrent different images, one pod each,
started at once; the wall time until the last runs, median of --runs runs (published only
unless --concurrent-modes names more). Needs root and the integration tools; the machine is
shared, so figures are noisy: compare the ratios of one run, not figures across runs.

    sudo python3 bench/kubelet_bench.py [--size-mb 300] [--layers 12] [--runs 5] [--concurrent 8]
    sudo python3 bench/kubelet_bench.py --size-mb 30 --runs 3 --concurrent 4   # a quick look
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.containerd import wait_until  # noqa: E402
from tests.support.images import random_image  # noqa: E402
from tests.support.kubelet import CriNode, Pod  # noqa: E402
from tests.support.registry import Registry  # noqa: E402

MODES = ("published", "plain", "overlayfs")
POD_COMMAND = ["/bin/busybox", "sleep", "3600"]


def build_images(root: Path, registry: Registry, count: int, size_mb: int, layers: int) -> list[str]:
    """`count` different images, each pushed and published into root/layout; returns their references."""
    references = []
    for index in range(count):
        started = time.monotonic()
        image = random_image(str(root / f"oci-{index}"), "bench", size_mb, layers, seed=1000 * (index + 1))
        reference = registry.push(image.layout, image.tag, f"bench/pod-{index}:bench")
        shutil.rmtree(image.layout)
        subprocess.run(["cvmfs-snapshotter", "publish", "--plain-http", "--target", str(root / "layout"), reference],
                       check=True, capture_output=True, timeout=1800)
        print(f"  image {index}: {size_mb} MB in {layers + 1} layers built, pushed and published"
              f" in {time.monotonic() - started:.1f}s", flush=True)
        references.append(reference)
    return references


def pod_ready(node: CriNode, reference: str, name: str, phases: list[float] | None = None) -> tuple[float, Pod]:
    """Seconds from PullImage to a running container; `phases` gets the pull's share and the rest."""
    started = time.monotonic()
    node.kubelet.cri.pull_image(reference)
    pulled = time.monotonic()
    pod = node.kubelet.start_pod(name, reference, POD_COMMAND)
    ready = time.monotonic()
    if phases is not None:
        phases += [pulled - started, ready - pulled]
    return ready - started, pod


def reset(node: CriNode, pods: list[Pod], references: list[str], baseline: list[str] | None) -> None:
    """Deletes the pods and images the kubelet's way and waits for GC (not timed)."""
    for pod in pods:
        node.kubelet.delete_pod(pod, grace_seconds=0)
    for reference in references:
        node.kubelet.cri.remove_image(reference)
    wait_until(lambda: node.containerd_snapshots() == baseline, 300, "GC after RemoveImage")


def single_runs(node: CriNode, reference: str, runs: int, mode: str) -> list[float]:
    baseline, times, phases = node.containerd_snapshots(), [], []
    for run in range(runs):
        elapsed, pod = pod_ready(node, reference, f"{mode}-single-{run}", phases)
        times.append(elapsed)
        reset(node, [pod], [reference], baseline)
    pulls, starts = phases[0::2], phases[1::2]
    print(f"  {mode:9s} single, median PullImage {statistics.median(pulls):.2f}s +"
          f" sandbox and container start {statistics.median(starts):.2f}s", flush=True)
    return times


def concurrent_runs(node: CriNode, references: list[str], runs: int, mode: str) -> list[float]:
    baseline, times, slowest_pulls, slowest_starts = node.containerd_snapshots(), [], [], []
    with ThreadPoolExecutor(len(references)) as pool:
        for run in range(runs):
            phases: list[list[float]] = [[] for _ in references]
            started = time.monotonic()
            started_pods = list(pool.map(
                lambda item: pod_ready(node, item[1], f"{mode}-many-{run}-{item[0]}", phases[item[0]]),
                enumerate(references)))
            times.append(time.monotonic() - started)
            slowest_pulls.append(max(pull for pull, _ in phases))
            slowest_starts.append(max(start for _, start in phases))
            reset(node, [pod for _, pod in started_pods], references, baseline)
    print(f"  {mode:9s} concurrent, medians of the slowest PullImage {statistics.median(slowest_pulls):.2f}s"
          f" and of the slowest sandbox and container start {statistics.median(slowest_starts):.2f}s", flush=True)
    return times


def measure(root: Path, registry: Registry, references: list[str], args: argparse.Namespace) -> dict:
    results: dict[str, dict[str, list[float]]] = {}
    for mode in MODES:
        layout = root / ("layout" if mode == "published" else "empty-layout")
        with CriNode.start(root / f"node-{mode}", builtin=mode == "overlayfs", registry=registry,
                           layout=layout) as node:
            results[mode] = {"single": single_runs(node, references[0], args.runs, mode)}
            print(f"  {mode:9s} single:     {', '.join(f'{t:.2f}s' for t in results[mode]['single'])}", flush=True)
            if mode in args.concurrent_modes:
                results[mode]["concurrent"] = concurrent_runs(node, references, args.runs, mode)
                print(f"  {mode:9s} concurrent: {', '.join(f'{t:.2f}s' for t in results[mode]['concurrent'])}",
                      flush=True)
        shutil.rmtree(root / f"node-{mode}", ignore_errors=True)
    return {mode: {kind: statistics.median(times) for kind, times in kinds.items()} for mode, kinds in results.items()}


def report(medians: dict, args: argparse.Namespace) -> None:
    print(f"\nPullImage -> container started, {args.size_mb} MB in {args.layers + 1} layers,"
          f" median of {args.runs} runs:")
    print(f"  {'mode':10s} {'1 pod':>8s} {f'{args.concurrent} pods':>9s} {'many/1':>7s}")
    for mode, row in medians.items():
        many = f"{row['concurrent']:8.2f}s {row['concurrent'] / row['single']:6.2f}x" if "concurrent" in row else ""
        print(f"  {mode:10s} {row['single']:7.2f}s {many}")
    published = medians["published"]["single"]
    print(f"\n  plain pull / published:     {medians['plain']['single'] / published:6.1f}x   (target >= 10x)")
    print(f"  builtin overlayfs / published: {medians['overlayfs']['single'] / published:6.1f}x")
    if "concurrent" in medians["published"]:
        ratio = medians["published"]["concurrent"] / published
        print(f"  published, {args.concurrent} pods at once / 1 pod: {ratio:.2f}x   (target <= 2x)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=300, help="image size in MB (smaller for a quick run)")
    parser.add_argument("--layers", type=int, default=12, help="random-data layers per image (plus busybox)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--concurrent", type=int, default=8, help="different images started at once")
    parser.add_argument("--concurrent-modes", nargs="*", default=["published"], choices=MODES)
    parser.add_argument("--workdir", default=None, help="parent of the temp dir (default: system temp)")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="kubelet-bench-", dir=args.workdir))
    try:
        with Registry.start(root / "registry") as registry:
            print(f"building {args.concurrent} images:", flush=True)
            references = build_images(root, registry, args.concurrent, args.size_mb, args.layers)
            medians = measure(root, registry, references, args)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report(medians, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
