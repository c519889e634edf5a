#!/usr/bin/env python3
"""Benchmark: how fast each daemon's `--version` and `--help` answer.

Runs each console script N times and prints the median wall time, side by side with the
interpreter alone (`python -c pass`) and with importing the daemon's running part
(`service`: grpc, protobuf, pydantic, the container), i.e. what `--version` cost when it was
parsed after those imports. The ratio is service import / --version.

    python bench/cli_startup.py [--runs 10]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

DAEMONS = {
    "cvmfs-snapshotter": "snapmux.entrypoints.cvmfs_snapshotter.service",
    "demux-snapshotter": "snapmux.entrypoints.demux_snapshotter.service",
    "http-address-resolver": "snapmux.entrypoints.http_address_resolver.service",
}


def median_seconds(argv: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    runs = parser.parse_args().runs
    baseline = median_seconds([sys.executable, "-c", "pass"], runs)
    print(f"python -c pass: {baseline * 1e3:.0f} ms (median of {runs})")
    for daemon, service in DAEMONS.items():
        version = median_seconds([daemon, "--version"], runs)
        helped = median_seconds([daemon, "--help"], runs)
        heavy = median_seconds([sys.executable, "-c", f"import {service}"], runs)
        print(f"{daemon}: --version {version * 1e3:.0f} ms, --help {helped * 1e3:.0f} ms, "
              f"import of its service {heavy * 1e3:.0f} ms (x{heavy / version:.1f} of --version)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
