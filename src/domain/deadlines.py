"""The caller's deadline, carried to the calls made on its behalf.

containerd, `ctr --timeout` or CRI may bound a snapshots call. The demux answers it by calling
the snapshotter in a VM; without the caller's deadline that call would keep the VM busy after
the caller has given up, and a retry would queue behind it. The wire adapter sets
`current_deadline` from the incoming call; outgoing calls take what is left of it.
"""

from __future__ import annotations

import time
from contextvars import ContextVar

from snapmux.domain.errors import DeadlineExceededError

current_deadline: ContextVar[float | None] = ContextVar("current_deadline", default=None)
"""`time.monotonic()` instant by which the current caller wants its answer; None: no bound."""


def deadline_in(seconds: float | None) -> float | None:
    """The instant `seconds` from now, as `current_deadline` holds it."""
    return None if seconds is None else time.monotonic() + seconds


def time_left(own_timeout: float | None = None) -> float | None:
    """Seconds an outgoing call may take: the caller's remaining time, capped by this hop's own
    timeout. A deadline already passed fails here, before anything is sent."""
    deadline = current_deadline.get()
    if deadline is None:
        return own_timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise DeadlineExceededError("the caller's deadline passed before the call was forwarded")
    return left if own_timeout is None else min(left, own_timeout)
