"""Start the real `http-address-resolver` daemon from a test, always torn down.

    with running_resolver(tmp_path, static={"vm-a": {"network": "unix", "address": "/run/a.sock"}}) as daemon:
        ... HttpAddressResolver(daemon.url) ...

    with running_resolver(tmp_path, shim_base_dir=some_dir) as daemon: ...

The daemon listens on 127.0.0.1 port 0; the helper reads the bound port from its
log and then polls /healthz until it answers (200, or 503 while its backend is down), within a deadline.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

_LISTENING = re.compile(r"listening on (http://[0-9.]+:\d+)")


@dataclass
class ResolverDaemon:
    url: str
    process: subprocess.Popen
    log_path: Path
    config_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM and the exit status (the context manager's exit then has nothing left to do)."""
        return stop(self.process)


def command() -> list[str]:
    """The installed console script when present, else the module (same code)."""
    script = shutil.which("http-address-resolver")
    return [script] if script else [sys.executable, "-m", "snapmux.entrypoints.http_address_resolver.main"]


def write_config(directory: Path, *, static: Mapping | None = None, shim_base_dir: str | Path | None = None,
                 extra_toml: str = "") -> Path:
    """A TOML config for the static backend (map written as JSON) or the shim-base one."""
    lines = ['address = "127.0.0.1:0"']
    if static is not None:
        map_path = directory / "addresses.json"
        map_path.write_text(json.dumps(dict(static)))
        lines += ['backend = "static"', "[static]", f"path = {json.dumps(str(map_path))}"]
    elif shim_base_dir is not None:
        lines += ['backend = "shim-base"', "[shim_base]", f"dir = {json.dumps(str(shim_base_dir))}"]
    config = directory / "resolver.toml"
    config.write_text("\n".join(lines) + "\n" + extra_toml)
    return config


@contextmanager
def running_resolver(directory: Path, *, static: Mapping | None = None, shim_base_dir: str | Path | None = None,
                     config: Path | None = None, extra_toml: str = "", timeout: float = 20.0,
                     env: Mapping[str, str] | None = None) -> Iterator[ResolverDaemon]:
    directory.mkdir(parents=True, exist_ok=True)
    config = config or write_config(directory, static=static, shim_base_dir=shim_base_dir, extra_toml=extra_toml)
    log_path = directory / "resolver.log"
    with open(log_path, "wb") as log_file:
        environ = {k: v for k, v in (os.environ if env is None else env).items() if not k.startswith("SNAPMUX_RESOLVER_")}
        process = subprocess.Popen([*command(), "--config", str(config)], stdout=log_file, stderr=log_file, env=environ)
    try:
        url = wait_until_ready(process, log_path, timeout)
        yield ResolverDaemon(url, process, log_path, config)
    finally:
        stop(process)


def wait_until_ready(process: subprocess.Popen, log_path: Path, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    url = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"resolver exited with {process.returncode}:\n{log_path.read_text(errors='replace')}")
        if url is None:
            match = _LISTENING.search(log_path.read_text(errors="replace"))
            url = match.group(1) if match else None
        if url is not None and _healthy(url):
            return url
        time.sleep(0.05)
    raise TimeoutError(f"resolver not ready within {timeout}s:\n{log_path.read_text(errors='replace')}")


def _healthy(url: str) -> bool:
    """Answering at all: /healthz is 503 while the backend cannot answer (a test may want that)."""
    try:
        return httpx.get(f"{url}/healthz", timeout=1.0).status_code in (200, 503)
    except httpx.HTTPError:
        return False


def stop(process: subprocess.Popen, grace: float = 10.0) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode
