"""systemd's readiness protocol (sd_notify): one datagram to the socket named by `$NOTIFY_SOCKET`.

With `Type=notify` systemd starts the units ordered after a daemon only once it sent
`READY=1`, and shows `STOPPING=1` as "deactivating". The protocol is a single `sendto`
(a path, or `@name` for the abstract namespace), so it is written here rather than pulled
in: the `sdnotify` package has not been released since 2017. Without the variable (not
under systemd) nothing is sent; a failed send is logged, never fatal.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)

READY = "READY=1"
STOPPING = "STOPPING=1"


def notify(state: str, environ: dict[str, str] | None = None) -> bool:
    """Sends `state` (e.g. READY=1) to systemd; True when it was sent. Microseconds: a local datagram."""
    address = (os.environ if environ is None else environ).get("NOTIFY_SOCKET", "")
    if not address:
        return False
    target = "\0" + address[1:] if address.startswith("@") else address
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode(), target)
    except OSError as error:
        log.warning("cannot notify systemd at %s: %s", address, error.strerror or error)
        return False
    return True
