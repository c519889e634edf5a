#!/usr/bin/env python3
"""First pull to container exit on a fresh node, for an image whose layers sit in a layout
built the way DUCC builds unpacked.cern.ch (foreign layers: `.wh.` files kept, `.cvmfscatalog`).

The image (default ~500 MB in ~100k small files of incompressible data, spread over a few
layers, each layer deleting a few files and a directory of the one below) is built, pushed to
a private docker-registry on 127.0.0.1 and ingested into two temp layouts: one without and one
with DUCC's `.chains`. Each run starts a fresh containerd and cvmfs-snapshotter on a new root
(not timed), then times pull + `ctr run --rm` (the container lists its /data):

    scan:   ctr-remote images rpull, layouts without chains: each layer scanned on first sight
    chain:  ctr-remote images rpull, layouts with chains: the image served flattened, no scan
    plain:  ctr images pull (download + unpack) through the same snapshotter

and prints the median of the runs and the ratios. The layout files are in the page cache (a
warm CVMFS cache, the best case for the scan; a cold CVMFS mount scans slower). The machine is
shared: figures are noisy, compare the ratios measured side by side in one run.

    sudo python3 bench/first_pull_bench.py [--files 100000] [--size-mb 500] [--layers 5] [--runs 3]
    sudo python3 bench/first_pull_bench.py --quick      # 10k files, 50 MB, 1 run
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import os
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cvmfs_bench  # noqa: E402 - beside this script (sys.path[0])
from tests.support.containerd import Containerd  # noqa: E402
from tests.support.ducc import build_chain, ingest_layer  # noqa: E402
from tests.support.images import (  # noqa: E402
    LAYER_GZIP,
    BuiltImage,
    Descriptor,
    busybox_base,
    write_image,
    write_layer,
)
from tests.support.registry import Registry  # noqa: E402

SNAPSHOTTER = "cvmfs"
MODES = ("scan", "chain", "plain")


def _small_files_layer(layout: str, index: int, files: int, size: int, seed: int) -> Descriptor:
    """A layer of `files` random files of about `size` bytes in 100-file directories, plus the
    OCI whiteouts deleting a few files and one directory of the layer below."""
    rng = random.Random(seed)
    blobs = os.path.join(layout, "blobs", "sha256")
    os.makedirs(blobs, exist_ok=True)
    raw, outer = hashlib.sha256(), hashlib.sha256()
    with tempfile.NamedTemporaryFile(dir=blobs, delete=False) as out:
        class Tee(io.RawIOBase):
            def writable(self) -> bool:
                return True

            def write(self, data) -> int:  # type: ignore[no-untyped-def]
                outer.update(data)
                return out.write(data)

        class Inner(io.RawIOBase):
            def __init__(self, target) -> None:  # type: ignore[no-untyped-def]
                self.target = target

            def writable(self) -> bool:
                return True

            def write(self, data) -> int:  # type: ignore[no-untyped-def]
                raw.update(data)
                return self.target.write(data)

        zipped = gzip.GzipFile(fileobj=Tee(), mode="wb", compresslevel=1, mtime=0)
        with tarfile.open(fileobj=Inner(zipped), mode="w|", format=tarfile.PAX_FORMAT) as tar:
            def add(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"") -> None:
                info = tarfile.TarInfo(name)
                info.type, info.mtime, info.size = kind, 1_700_000_000, len(data)
                info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
                tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)

            add(f"data/l{index}", tarfile.DIRTYPE)
            for number in range(files):
                if number % 100 == 0:
                    add(f"data/l{index}/d{number // 100}", tarfile.DIRTYPE)
                add(f"data/l{index}/d{number // 100}/f{number}", data=rng.randbytes(rng.randint(size // 2, size * 3 // 2)))
            if index > 0:
                add(f"data/l{index - 1}/d0/.wh.f1")
                add(f"data/l{index - 1}/d0/.wh.f2")
                add(f"data/l{index - 1}/.wh.d1")
        zipped.close()
        size_written = out.tell()
    os.rename(out.name, os.path.join(blobs, outer.hexdigest()))
    return Descriptor(LAYER_GZIP, f"sha256:{outer.hexdigest()}", size_written, f"sha256:{raw.hexdigest()}")


def build_image(root: Path, files: int, size_mb: int, layers: int) -> BuiltImage:
    per_file = size_mb * 1024 * 1024 // files
    descriptors = [write_layer(str(root / "oci"), busybox_base())]
    for index in range(layers):
        descriptors.append(_small_files_layer(str(root / "oci"), index, files // layers, per_file, index))
    return write_image(str(root / "oci"), "bench", descriptors,
                       ["/bin/sh", "-c", "/bin/busybox find /data -type f | /bin/busybox wc -l"])


def fresh_node(work: Path, layout: Path):
    """cvmfs_bench's fresh node, with a scan budget no run of this size runs over."""
    return cvmfs_bench.fresh_node(work, layout, "foreign-scan-budget = 60\n")


def timed_run(containerd: Containerd, reference: str, mode: str, registry: Registry, image: BuiltImage) -> float:
    base = ["--address", containerd.address, "--namespace", containerd.namespace]
    pull = ["ctr", *base, "images", "pull"] if mode == "plain" else ["ctr-remote", *base, "images", "rpull"]
    mark = registry.mark()
    start = time.monotonic()
    subprocess.run([*pull, "--plain-http", "--snapshotter", SNAPSHOTTER, reference],
                   check=True, capture_output=True, timeout=3600)
    done = containerd.ctr("run", "--rm", "--snapshotter", SNAPSHOTTER, reference, "bench", timeout=1800)
    elapsed = time.monotonic() - start
    fetched = sum(len(registry.blob_fetches(layer.digest, mark)) for layer in image.layers)
    expected_fetches = len(image.layers) if mode == "plain" else 0
    assert fetched == expected_fetches, f"{mode}: {fetched} layer blobs fetched, expected {expected_fetches}"
    print(f"    {mode:5s} {elapsed:7.2f}s  ({done.stdout.strip()} files in /data, {fetched} blobs fetched)", flush=True)
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--size-mb", type=int, default=500)
    parser.add_argument("--layers", type=int, default=5, help="small-file layers (+ busybox)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="10k files, 50 MB, 1 run")
    parser.add_argument("--workdir", default=None, help="parent of the temp dir (default: system temp)")
    args = parser.parse_args(argv)
    if args.quick:
        args.files, args.size_mb, args.runs = 10_000, 50, 1
    root = Path(tempfile.mkdtemp(prefix="first-pull-bench-", dir=args.workdir))
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    try:
        with Registry.start(root / "registry") as registry:
            started = time.monotonic()
            image = build_image(root, args.files, args.size_mb, args.layers)
            reference = registry.push(image.layout, image.tag, "bench/first-pull:bench")
            layouts = {"scan": root / "layout-layers", "chain": root / "layout-chains", "plain": root / "layout-empty"}
            for mode in ("scan", "chain"):
                for layer in image.layers:
                    ingest_layer(image, layer.digest, layouts[mode])
            build_chain(image, layouts["chain"], len(image.layers) - 1, hardlink=True)
            layouts["plain"].mkdir()
            print(f"image: {args.files} files, ~{args.size_mb} MB, {args.layers} layers + busybox; built, pushed and"
                  f" ingested in {time.monotonic() - started:.0f}s", flush=True)
            for run in range(args.runs):
                print(f"  run {run + 1}:", flush=True)
                for mode in MODES:
                    with fresh_node(root / f"node-{mode}-{run}", layouts[mode]) as containerd:
                        times[mode].append(timed_run(containerd, reference, mode, registry, image))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    medians = {mode: statistics.median(found) for mode, found in times.items()}
    print(f"\n  median of {args.runs}: " + ", ".join(f"{mode} {medians[mode]:.2f}s" for mode in MODES))
    print(f"  plain / scan  = {medians['plain'] / medians['scan']:.1f}x (target >= 10x)")
    print(f"  plain / chain = {medians['plain'] / medians['chain']:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
