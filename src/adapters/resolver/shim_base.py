"""Finds a VM's vsock from firecracker-containerd's shim directory convention.

The runtime shim of VM `<vmid>` started in containerd namespace `<ns>` lives in
`<shim_base_dir>/<ns>#<vmid>/`, and Firecracker's vsock unix socket is
`firecracker.vsock` there. The demux asks by containerd namespace, and the VM id
is that namespace, so no control-plane call is needed: one stat answers.
"""

from __future__ import annotations

import asyncio
import os
import time

from snapmux.domain.errors import NotFoundError, UnavailableError
from snapmux.domain.model import SnapshotterAddress
from snapmux.domain.namespaces import validate_namespace

VSOCK_FILE = "firecracker.vsock"
DEFAULT_SHIM_BASE_DIR = "/var/lib/firecracker-containerd/shim-base"


class ShimBaseAddressResolver:
    """Positive answers are cached for `cache_ttl` seconds: a VM's socket does not move,
    and a request burst from the demux then costs no filesystem work. Misses are never
    cached, so a VM that just started is found at once."""

    def __init__(
        self,
        shim_base_dir: str = DEFAULT_SHIM_BASE_DIR,
        *,
        containerd_namespace: str = "default",
        snapshotter_port: int | None = 10000,
        metrics_port: int | None = 10001,
        cache_ttl: float = 1.0,
    ) -> None:
        self._base = os.path.realpath(shim_base_dir)
        self._containerd_namespace = validate_namespace(containerd_namespace)
        self._ports = (snapshotter_port, metrics_port)
        self._ttl = cache_ttl
        self._found: dict[str, tuple[float, SnapshotterAddress]] = {}

    def socket_path(self, namespace: str) -> str:
        """The path for `namespace`; validation already forbids `/` and `..` in it."""
        validate_namespace(namespace)
        path = os.path.join(self._base, f"{self._containerd_namespace}#{namespace}", VSOCK_FILE)
        if os.path.commonpath([self._base, os.path.normpath(path)]) != self._base:
            raise NotFoundError(f"VM {namespace!r}: {path} is outside the shim base directory")
        return path

    async def check(self) -> None:
        """Healthy while the shim base directory can be searched: without it every VM is "not found"."""
        problem = await asyncio.to_thread(_unusable_directory, self._base)
        if problem:
            raise UnavailableError(f"shim base directory {self._base} {problem}")

    async def resolve(self, namespace: str) -> SnapshotterAddress:
        path = self.socket_path(namespace)
        now = time.monotonic()
        cached = self._found.get(namespace)
        if cached is not None and cached[0] > now:
            return cached[1]
        if not await asyncio.to_thread(_exists_inside, self._base, path):
            self._found.pop(namespace, None)
            raise NotFoundError(f"no VM {namespace!r}: {path} does not exist")
        address = SnapshotterAddress("unix", path, *self._ports, {"namespace": namespace})
        if self._ttl > 0:
            self._found[namespace] = (now + self._ttl, address)
        return address


def _unusable_directory(path: str) -> str | None:
    if not os.path.isdir(path):
        return "does not exist" if not os.path.lexists(path) else "is not a directory"
    if not os.access(path, os.R_OK | os.X_OK):
        return "cannot be read"
    return None


def _exists_inside(base: str, path: str) -> bool:
    """Exists, and symlinks do not lead out of `base` (an operator's link is not our VM)."""
    resolved = os.path.realpath(path)
    if os.path.commonpath([base, resolved]) != base:
        return False
    try:
        os.stat(resolved)
    except OSError:
        return False
    return True
