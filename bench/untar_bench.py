"""Layer extraction speed: the publisher's descriptor-relative extractor vs tarfile.extractall.

`tarfile.extractall(filter="data")` (the standard library's own safe extraction, path-based)
is the reference; both unpack the same layer tars in one run, best of `--runs`. Two shapes:
many small files in a deep-ish tree (the per-entry cost: opens, fchown/fchmod/utime) and a
few large files (the copy). Run as root (owners are applied).
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import tarfile
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from snapmux.adapters.cvmfs.untar import extract_layer  # noqa: E402


def small_files(count: int) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for index in range(count):
            directory = f"usr/share/pkg{index // 100}/sub{index % 7}"
            if index % 100 == 0:
                for depth in range(1, 5):
                    info = tarfile.TarInfo("/".join(directory.split("/")[:depth]))
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(info)
            data = b"x" * (index % 2000)
            info = tarfile.TarInfo(f"{directory}/file{index}")
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def large_files(count: int, size: int) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for index in range(count):
            info = tarfile.TarInfo(f"data/blob{index}")
            info.size = size
            tar.addfile(info, io.BytesIO(os.urandom(size)))
    return out.getvalue()


def best(runs: int, extract, data: bytes, work: str) -> tuple[float, float]:
    """Best wall and best CPU (user + system) seconds: on a shared machine the CPU figure is the steady one."""
    walls, cpus = [], []
    for run in range(runs):
        target = os.path.join(work, f"run{run}")
        wall, cpu = time.perf_counter(), time.process_time()
        extract(data, target)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
        shutil.rmtree(target)
    return min(walls), min(cpus)


def ours(data: bytes, target: str) -> None:
    extract_layer(io.BytesIO(data), target)


def stdlib(data: bytes, target: str) -> None:
    os.makedirs(target)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as tar:
        tar.extractall(target, filter="data")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    shapes = {f"{args.files} small files": small_files(args.files), "8 x 32 MB files": large_files(8, 32 << 20)}
    print(f"  {'layer':<20} {'extract_layer wall/cpu':>24} {'extractall wall/cpu':>22} {'cpu ratio':>10}")
    with tempfile.TemporaryDirectory() as work:
        for name, data in shapes.items():
            mine, reference = best(args.runs, ours, data, work), best(args.runs, stdlib, data, work)
            print(f"  {name:<20} {mine[0]:14.2f}s /{mine[1]:6.2f}s {reference[0]:12.2f}s /{reference[1]:6.2f}s"
                  f" {mine[1] / reference[1]:9.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
