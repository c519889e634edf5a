"""Shared integration fixtures: generic ones only (root, binaries, daemons that are always torn down).

A missing part skips the test that needs it, but fails it in CI (tests/support/requirements.py).
"""

from __future__ import annotations

import pytest

from tests.support import conformance
from tests.support.containerd import Daemon
from tests.support.requirements import lacking_binaries, lacking_root, require
from tests.support.sockets import unix_socket_listening

__all__ = ["daemons", "require_binaries", "require_root", "unix_socket_listening"]


def require_root() -> None:
    require(*lacking_root("mounts, containerd"))


def require_binaries(*names: str) -> None:
    require(*lacking_binaries(*names))


def pytest_terminal_summary(terminalreporter) -> None:
    """How many cases of containerd's suite ran through each stack: pytest's own count is of tests."""
    if conformance.RUNS:
        terminalreporter.section("containerd snapshotter conformance")
        for run in conformance.RUNS:
            terminalreporter.line(run.summary())


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
