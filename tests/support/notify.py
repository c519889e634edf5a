"""A `$NOTIFY_SOCKET` for a daemon under test: the datagram socket systemd would bind.

    with NotifySocket(tmp_path / "notify") as notify:
        env = {**os.environ, "NOTIFY_SOCKET": notify.path}
        ... start the daemon with env, wait for notify.ready ...
        assert notify.received() == ["READY=1", "STOPPING=1"]
"""

from __future__ import annotations

import os
import socket
from pathlib import Path


class NotifySocket:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._messages: list[str] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(self.path)
        self._sock.setblocking(False)

    def __enter__(self) -> NotifySocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self._sock.close()
        Path(self.path).unlink(missing_ok=True)

    def env(self) -> dict[str, str]:
        return {**os.environ, "NOTIFY_SOCKET": self.path}

    def received(self) -> list[str]:
        """Every state sent so far, in order (each datagram may hold several newline-separated ones)."""
        while True:
            try:
                datagram = self._sock.recv(4096)
            except BlockingIOError:
                return list(self._messages)
            self._messages += datagram.decode().split("\n")

    def ready(self) -> bool:
        return "READY=1" in self.received()
