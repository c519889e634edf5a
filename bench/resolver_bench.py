#!/usr/bin/env python3
"""Benchmark: http-address-resolver answering cached shim-base lookups.

Starts the real daemon (console script) with the shim-base backend over a temp
directory of fake VMs, drives it with 64 concurrent keep-alive HTTP/1.1 clients
(raw asyncio streams, so the client stays cheap) for a fixed duration, and prints
requests/s, p50/p99 latency and the daemon's RSS (/proc/<pid>/status). It runs
once with the positive-lookup cache (default 1 s TTL) and once without, and
prints the ratio.

    python bench/resolver_bench.py [--seconds 5] [--clients 64] [--vms 100]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx


def start_daemon(directory: Path, base: Path, cache_ttl: float) -> tuple[subprocess.Popen, str]:
    config = directory / "resolver.toml"
    config.write_text(
        f'address = "127.0.0.1:0"\nbackend = "shim-base"\naccess_log = false\nlog_level = "WARNING"\n'
        f'[shim_base]\ndir = "{base}"\ncache_ttl_seconds = {cache_ttl}\n'
    )
    log = directory / "daemon.log"
    script = shutil.which("http-address-resolver")
    argv = [script] if script else [sys.executable, "-m", "snapmux.entrypoints.http_address_resolver.main"]
    with open(log, "wb") as out:
        process = subprocess.Popen([*argv, "--config", str(config), "--log-level", "INFO"], stdout=out, stderr=out)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        match = re.search(r"listening on (http://[0-9.]+:\d+)", log.read_text())
        if match:
            try:
                if httpx.get(match.group(1) + "/healthz", timeout=1).status_code == 200:
                    return process, match.group(1)
            except httpx.HTTPError:
                pass
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    raise SystemExit(f"daemon did not start:\n{log.read_text()}")


def rss_kib(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


async def client(port: int, namespaces: list[str], stop_at: float, latencies: list[float], offset: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = offset
    while time.perf_counter() < stop_at:
        request = f"GET /address?namespace={namespaces[i % len(namespaces)]} HTTP/1.1\r\nHost: b\r\n\r\n".encode()
        started = time.perf_counter()
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(re.search(rb"Content-Length: (\d+)", head).group(1))
        await reader.readexactly(length)
        latencies.append(time.perf_counter() - started)
        if not head.startswith(b"HTTP/1.1 200"):
            raise SystemExit(f"unexpected answer: {head[:80]!r}")
        i += 1
    writer.close()


async def drive(url: str, clients: int, seconds: float, namespaces: list[str]) -> tuple[float, list[float]]:
    port = int(url.rsplit(":", 1)[1])
    warm: list[float] = []
    await asyncio.gather(*(client(port, namespaces, time.perf_counter() + 0.5, warm, i) for i in range(clients)))
    latencies: list[float] = []
    started = time.perf_counter()
    await asyncio.gather(*(client(port, namespaces, started + seconds, latencies, i) for i in range(clients)))
    return time.perf_counter() - started, latencies


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def run(label: str, cache_ttl: float, args: argparse.Namespace, base: Path, work: Path) -> float:
    namespaces = [f"vm-{i}" for i in range(args.vms)]
    process, url = start_daemon(work, base, cache_ttl)
    try:
        elapsed, latencies = asyncio.run(drive(url, args.clients, args.seconds, namespaces))
        memory = rss_kib(process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(10)
    rps = len(latencies) / elapsed
    print(f"{label:<24} {rps:>9.0f} req/s  p50 {percentile(latencies, 0.50) * 1e3:6.2f} ms  "
          f"p99 {percentile(latencies, 0.99) * 1e3:6.2f} ms  requests {len(latencies):>7}  "
          f"server RSS {memory['VmRSS'] / 1024:.1f} MiB (peak {memory['VmHWM'] / 1024:.1f} MiB)")
    return rps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--vms", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "shim-base"
        for i in range(args.vms):
            (base / f"default#vm-{i}").mkdir(parents=True)
            (base / f"default#vm-{i}" / "firecracker.vsock").touch()
        print(f"http-address-resolver, shim-base backend, {args.clients} keep-alive clients, {args.vms} VMs, "
              f"{args.seconds:.0f} s, {os.cpu_count()} CPUs (client and server share them)")
        cached = run("cached (ttl 1 s)", 1.0, args, base, Path(tmp))
        uncached = run("uncached (stat per call)", 0.0, args, base, Path(tmp))
        print(f"cache speed-up: {cached / uncached:.2f}x")


if __name__ == "__main__":
    main()
