"""An unprivileged local user, for tests of who may reach a daemon's sockets.

The daemons run as root; the attacker is any other local account. `connects_as(uid, path)`
tries one connect from a child process that dropped to `uid` (and only `gids`) before exec,
and `ConnectWatcher` keeps trying during a daemon's whole startup, so a socket that is
reachable even for an instant (bound 0777, chmod later) is caught.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

NOBODY = pwd.getpwnam("nobody").pw_uid
NOGROUP = 65534
STRANGER = 65533
"""A uid with no account and no group: reaches only what the world may."""

_ONCE = """
import socket, sys
with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
    sys.exit(s.connect_ex(sys.argv[1]))
"""

_LOOP = """
import socket, sys
while True:
    for path in sys.argv[1:]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            if s.connect_ex(path) == 0:
                print("connected", path, flush=True)
                sys.exit(0)
"""


PYTHON = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
"""A python the unprivileged user may run (the test's own may sit under root's home); stdlib only."""


def _as(uid: int, gids: Sequence[int]) -> list[str]:
    """setpriv drops to `uid` in the exec'd child. Not subprocess's user=/group=: those call setuid
    between fork and exec, and in a parent with threads (gRPC's) glibc's setxid can wait there
    forever for threads the child does not have (seen: a test hung in _execute_child past its timeout)."""
    gid = gids[0] if gids else uid
    groups = ["--groups", ",".join(map(str, gids))] if gids else ["--clear-groups"]
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", *groups, "--"]


def connects_as(uid: int, path: str | os.PathLike[str], gids: Sequence[int] = ()) -> int:
    """The errno of one connect by `uid` (0: connected)."""
    done = subprocess.run([*_as(uid, gids), PYTHON, "-I", "-c", _ONCE, os.fspath(path)], timeout=60, cwd="/")
    return done.returncode


@contextmanager
def connect_watcher(uid: int, paths: Sequence[str | os.PathLike[str]]) -> Iterator[Path]:
    """Yields the file where the watcher writes `connected PATH` if it ever gets in; stopped on exit."""
    out = Path(tempfile.mkstemp(prefix="snapmux-watch-")[1])
    with open(out, "w") as handle:
        watcher = subprocess.Popen([*_as(uid, ()), PYTHON, "-I", "-c", _LOOP, *map(os.fspath, paths)],
                                   stdout=handle, cwd="/")
    try:
        yield out
    finally:
        watcher.kill()
        watcher.wait(timeout=30)
        out.unlink()  # read it inside the block
