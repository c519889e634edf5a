"""A TCP port range for per-VM metrics proxies, and the first free port in it.

A port is "free" when we do not hold it and bind() succeeds, so ports other
processes listen on are skipped rather than trusted to a list. The bound
socket itself is handed to the HTTP server, so no other process can take the
port between the check and the listen.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PortRange:
    """Inclusive TCP ports `first`..`last`; `parse` is the one reading of the `A-B` text (settings use it)."""

    first: int
    last: int

    @classmethod
    def parse(cls, text: str) -> PortRange:
        """`A-B` with 1 <= A <= B <= 65535; raises ValueError saying what is wrong."""
        low, dash, high = text.strip().partition("-")
        if not dash or not low.strip().isdigit() or not high.strip().isdigit():
            raise ValueError(f"port range {text!r} must look like 9000-9999")
        first, last = int(low), int(high)
        if not 1 <= first <= last <= 65535:
            raise ValueError(f"port range {text!r} must satisfy 1 <= first <= last <= 65535")
        return cls(first, last)

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.first <= port <= self.last

    def __str__(self) -> str:
        return f"{self.first}-{self.last}"


class PortAllocator:
    def __init__(self, ports: PortRange, host: str = "127.0.0.1") -> None:
        self.ports = ports
        self.host = host
        self._held: set[int] = set()

    @property
    def held(self) -> frozenset[int]:
        return frozenset(self._held)

    def bind(self) -> socket.socket | None:
        """A listening socket on the first free port of the range, or None when it is full."""
        for port in range(self.ports.first, self.ports.last + 1):
            if port in self._held:
                continue
            sock = self._try_bind(port)
            if sock is not None:
                self._held.add(port)
                return sock
        return None

    def _try_bind(self, port: int) -> socket.socket | None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            # SO_REUSEADDR only lets us reuse a port in TIME_WAIT after a release,
            # never one another socket is listening on.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, port))
            sock.listen(64)
            sock.setblocking(False)
            return sock
        except OSError as error:
            log.debug("metrics proxy port %s:%d is taken: %s", self.host, port, error)
            sock.close()
            return None

    def release(self, port: int) -> None:
        self._held.discard(port)
