"""Lock files that work on NFS: one per layer or chain, one for the whole target's GC.

A lock is a file created with O_CREAT|O_EXCL (atomic on NFSv3+ and local filesystems),
holding the holder's host, pid and a token. flock/fcntl locks are not used: on NFS they
depend on a lock daemon and vanish or linger with it. A lock is stale when

- its holder is on this host and its pid is gone (kill -9, crash): taken over at once;
- otherwise when its mtime is older than `stale_after`: a live holder touches it every
  `stale_after / 4` (a heartbeat thread), so only a dead or cut-off host goes stale;
- it is empty or unreadable (killed between create and write) and older than 10 s;
- it names this very process but no thread of it holds it (two threads taking over one
  stale lock can put a released lock back): orphaned, taken over at once.

A stale lock is taken over by renaming it aside (atomic: one of two racing takers wins) and
checking that what was moved is what was judged stale; a fresh lock moved by mistake is put
back with link(), which, like O_EXCL, never overwrites.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator

log = logging.getLogger(__name__)

HOST = socket.gethostname()
DEFAULT_STALE_AFTER = 600.0
EMPTY_STALE_AFTER = 10.0
_HELD: set[str] = set()
"""Tokens of the locks this process's threads hold now."""


class LockWaitStopped(Exception):
    """Asked to stop while waiting for another holder."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class FileLock:
    def __init__(self, path: str, stale_after: float = DEFAULT_STALE_AFTER) -> None:
        self.path, self.stale_after = path, stale_after
        self.token = ""
        self._beat: threading.Event | None = None

    def try_acquire(self) -> bool:
        """Non-blocking: True when this process now holds the lock."""
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        token = uuid.uuid4().hex
        body = json.dumps({"host": HOST, "pid": os.getpid(), "since": time.time(), "token": token}).encode()
        _HELD.add(token)  # before the file exists: a thread of ours reading it must not see an orphan
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            _HELD.discard(token)
            if self._take_over_if_stale():
                return self.try_acquire()
            return False
        with os.fdopen(fd, "wb") as out:
            out.write(body)
            out.flush()
            os.fsync(out.fileno())
        self.token = token
        self._start_heartbeat()
        return True

    def acquire(self, stop: threading.Event | None = None, poll: float = 0.1) -> None:
        """Waits for the holder (polls: NFS has no portable wake-up); `stop` ends the wait."""
        while not self.try_acquire():
            if stop is not None and stop.wait(poll):
                raise LockWaitStopped(self.path)
            if stop is None:
                time.sleep(poll)

    def release(self) -> None:
        if self._beat is not None:
            self._beat.set()
            self._beat = None
        if self.token and _read(self.path).get("token") == self.token:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        _HELD.discard(self.token)
        self.token = ""

    @contextlib.contextmanager
    def held(self, stop: threading.Event | None = None) -> Iterator[None]:
        self.acquire(stop)
        try:
            yield
        finally:
            self.release()

    def _start_heartbeat(self) -> None:
        done = self._beat = threading.Event()

        def beat() -> None:
            while not done.wait(self.stale_after / 4):
                with contextlib.suppress(OSError):
                    os.utime(self.path)

        threading.Thread(target=beat, name=f"lock-heartbeat {os.path.basename(self.path)}", daemon=True).start()

    def is_stale(self, holder: dict, mtime: float) -> bool:
        if not holder.get("token"):  # a writer fills it microseconds after creating it
            return time.time() - mtime > min(self.stale_after, EMPTY_STALE_AFTER)
        if holder.get("host") == HOST and holder.get("pid") == os.getpid():
            return holder["token"] not in _HELD  # ours but no thread holds it: orphaned by a race
        if holder.get("host") == HOST and isinstance(holder.get("pid"), int):
            return not _pid_alive(holder["pid"])
        return time.time() - mtime > self.stale_after

    def _take_over_if_stale(self) -> bool:
        try:
            mtime = os.stat(self.path).st_mtime
        except FileNotFoundError:
            return True  # released meanwhile: try again
        holder = _read(self.path)
        if not self.is_stale(holder, mtime):
            return False
        aside = f"{self.path}.stale-{uuid.uuid4().hex}"
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return True  # someone else took it over first: compete again
        if _read(aside) != holder:
            with contextlib.suppress(FileExistsError):
                os.link(aside, self.path)  # a fresh lock moved by mistake: put it back
        os.unlink(aside)
        log.warning("took over stale lock %s (held by %s)", self.path, holder or "nobody readable")
        return True


def _read(path: str) -> dict:
    try:
        with open(path, "rb") as handle:
            found = json.loads(handle.read() or b"{}")
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}
