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


VMADDR_CID_LOCAL = 1
"""AF_VSOCK's loopback cid: this machine, through the kernel's vsock_loopback transport."""


def vsock_loopback_or_skip(port: int) -> socket.socket:
    """A connection to `port` on cid 1, or a skip naming why: a kernel without vsock loopback
    (ETIMEDOUT/ENODEV) cannot run the test, whatever is installed. The caller closes the socket."""
    import pytest

    client = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
    client.settimeout(3)
    try:
        client.connect((VMADDR_CID_LOCAL, port))
    except OSError as error:
        client.close()
        pytest.skip(f"AF_VSOCK connect to cid 1 is impossible on this kernel: {error}")
    return client
