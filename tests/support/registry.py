"""A private docker-registry (distribution v2) on 127.0.0.1 for tests and benchmarks.

    with Registry.start(tmp_path / "registry") as registry:
        registry.push(image.layout, image.tag, "repo:tag")     # skopeo, plain http
        assert not registry.blob_fetches(digest)

Own config YAML, storage in the temp dir, a free loopback port, the access log (one
combined-log line per request) in `registry.log`; always killed and deleted after.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.containerd import Daemon

REGISTRY_BINARY = "/usr/bin/docker-registry"


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _config(storage: Path, port: int) -> str:
    return "\n".join([
        "version: 0.1",
        "log:",
        "  level: info",
        "  accesslog:",
        "    disabled: false",
        "storage:",
        "  filesystem:",
        f"    rootdirectory: {storage}",
        "  delete:",
        "    enabled: true",
        "  maintenance:",
        "    uploadpurging:",
        "      enabled: false",
        "http:",
        f"  addr: 127.0.0.1:{port}",
        "",
    ])


@dataclass
class Registry:
    base: Path
    port: int
    daemon: Daemon

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @classmethod
    @contextlib.contextmanager
    def start(cls, base: Path) -> Iterator[Registry]:
        base.mkdir(parents=True, exist_ok=True)
        port = free_loopback_port()
        config = base / "config.yml"
        config.write_text(_config(base / "storage", port))
        daemon = Daemon([REGISTRY_BINARY, "serve", str(config)], base / "registry.log")
        registry = cls(base, port, daemon)
        try:
            daemon.start(registry.ready)
            yield registry
        finally:
            daemon.kill()
            shutil.rmtree(base, ignore_errors=True)

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.host}/v2/", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def push(self, layout: str, tag: str, reference: str, *options: str) -> str:
        """Copies `oci:layout:tag` to `<host>/<reference>` (`options`: more skopeo copy flags);
        returns the full reference."""
        target = f"{self.host}/{reference}"
        subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", *options, f"oci:{layout}:{tag}",
                        f"docker://{target}"], check=True, capture_output=True, timeout=600)
        return target

    def log(self) -> str:
        return self.daemon.log()

    def requests(self) -> list[tuple[str, str, int]]:
        """(method, path, status) of every request in the access log so far."""
        found = re.findall(r'"(GET|HEAD|PUT|POST|PATCH|DELETE) (\S+) HTTP/[\d.]+" (\d{3})', self.log())
        return [(method, path, int(status)) for method, path, status in found]

    def mark(self) -> int:
        """How many requests the log holds now: pass it as `since` to look only at what follows."""
        return len(self.requests())

    def blob_fetches(self, digest: str, since: int = 0) -> list[str]:
        """Paths of GETs that downloaded the blob `digest` (HEADs only ask whether it exists)."""
        return [path for method, path, _ in self.requests()[since:]
                if method == "GET" and path.endswith(f"/blobs/{digest}")]
