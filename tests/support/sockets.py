"""The readiness probe shared by tests, benchmarks and the demo: is a daemon accepting on a unix socket?

A socket file can exist without a listener (a stale one from a killed daemon), so only a
successful connect counts as ready.
"""

from __future__ import annotations

import os
import socket


def unix_socket_listening(path: str | os.PathLike[str]) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        return probe.connect_ex(os.fspath(path)) == 0
