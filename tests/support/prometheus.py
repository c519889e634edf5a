"""Start a real Prometheus (`/usr/bin/prometheus`) from a test, always torn down.

    async with running_prometheus(tmp_path, sd_url="http://127.0.0.1:8080/") as prometheus:
        await prometheus.wait_for(lambda: ..., what="both targets up")

One `http_sd_configs` job (`snapmux`) with 1s refresh and scrape intervals, on a
free loopback port, temp storage; readiness is `/-/ready` polled with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx

from snapmux.adapters.metrics_proxy.port_range import PortRange
from snapmux.adapters.metrics_proxy.proxy import MetricsProxies
from tests.support.requirements import missing

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
T = TypeVar("T")

CONFIG = """\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: snapmux
    http_sd_configs:
      - url: {sd_url}
        refresh_interval: 1s
"""


def require_prometheus() -> None:
    if not os.access(PROMETHEUS, os.X_OK):
        missing(f"prometheus at {PROMETHEUS} (Debian package prometheus)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def proxy_port(proxies: MetricsProxies, namespace: str) -> int | None:
    """The port of `namespace`'s metrics proxy, None when it has none: read from the proxy itself,
    not from what service discovery advertises, so tests can hold the two against each other."""
    proxy = proxies._proxies.get(namespace)
    return proxy.port if proxy else None


def free_port_range(size: int) -> PortRange:
    """`size` consecutive loopback ports nobody listens on right now."""
    for _ in range(200):
        first = random.randint(20000, 30000)
        socks = []
        try:
            for port in range(first, first + size):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
            return PortRange(first, first + size - 1)
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError("no free port range")


@dataclass
class Prometheus:
    url: str
    log_path: Path
    client: httpx.AsyncClient

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    async def api(self, path: str, **params: str) -> Any:
        response = await self.client.get(f"/api/v1/{path}", params=params)
        response.raise_for_status()
        return response.json()["data"]

    async def active_targets(self) -> list[dict[str, Any]]:
        return (await self.api("targets", state="active"))["activeTargets"]

    async def query(self, expr: str) -> list[dict[str, Any]]:
        return (await self.api("query", query=expr))["result"]

    async def wait_for(self, probe: Callable[[], Awaitable[T]], what: str, timeout: float = 60.0) -> T:
        """Polls `probe` until it returns something truthy; fails with the last value and the log."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = await probe()
            except httpx.HTTPError as error:
                last = error
            else:
                if last:
                    return last
            await asyncio.sleep(0.25)
        raise AssertionError(f"Prometheus never showed {what} within {timeout:g}s; last: {last!r}\n{self.log()}")


@contextlib.asynccontextmanager
async def running_prometheus(directory: Path, sd_url: str, timeout: float = 60.0) -> AsyncIterator[Prometheus]:
    require_prometheus()
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "prometheus.yml"
    config.write_text(CONFIG.format(sd_url=sd_url))
    port = free_port()
    log_path = directory / "prometheus.log"
    with open(log_path, "wb") as log:
        process = await asyncio.create_subprocess_exec(
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=debug",
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    client = httpx.AsyncClient(base_url=url, timeout=5)
    prometheus = Prometheus(url, log_path, client)
    try:
        await _wait_ready(prometheus, process, timeout)
        yield prometheus
    finally:
        await client.aclose()
        await _stop(process)


async def _wait_ready(prometheus: Prometheus, process: asyncio.subprocess.Process, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.returncode is not None:
            raise AssertionError(f"prometheus exited with {process.returncode}:\n{prometheus.log()}")
        with contextlib.suppress(httpx.HTTPError):
            if (await prometheus.client.get("/-/ready")).status_code == 200:
                return
        await asyncio.sleep(0.1)
    raise AssertionError(f"prometheus not ready within {timeout:g}s:\n{prometheus.log()}")


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 15)
        except asyncio.TimeoutError:
            process.kill()
            await process.wait()
