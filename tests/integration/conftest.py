"""Shared integration fixtures: generic ones only (root, binaries, daemons that are always torn down)."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.support.containerd import Daemon
from tests.support.sockets import unix_socket_listening

__all__ = ["daemons", "require_binaries", "require_root", "unix_socket_listening"]


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (mounts, containerd)")


def require_binaries(*names: str) -> None:
    missing = [name for name in names if shutil.which(name) is None]
    if missing:
        pytest.skip(f"missing binaries: {', '.join(missing)}")


@pytest.fixture
def daemons():
    """Start with `daemons.start(argv, log_path, ready)`; every daemon is killed at teardown."""

    class Daemons:
        def __init__(self) -> None:
            self.started: list[Daemon] = []

        def start(self, argv, log_path, ready, env=None, timeout: float = 60.0) -> Daemon:
            daemon = Daemon(argv, log_path, env)
            self.started.append(daemon)
            return daemon.start(ready, timeout)

    started = Daemons()
    yield started
    for daemon in reversed(started.started):
        daemon.kill()
