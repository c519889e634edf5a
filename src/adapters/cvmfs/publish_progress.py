"""What a long publish shows while it runs: per layer, its digest, size and bytes done.

The publisher's layer workers are threads, so the port is plain synchronous calls, made from
any worker at any time: every implementation here is thread-safe. `Progress` is what
SitePublisher calls; the command line picks one by the output it writes to: a live bar on a
terminal (rich), one line at the start and one at the end of each layer otherwise (logs,
CI), nothing for `--quiet` and `--json`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import IO, ContextManager, Protocol

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress as RichProgress, TaskID, TextColumn, TransferSpeedColumn

log = logging.getLogger(__name__)

Outcome = str
"""How a layer ended: "published", "skipped" (already in place), "failed" or "stopped" (SIGTERM)."""


class Progress(Protocol):
    def started(self, digest: str, size: int | None) -> None:
        """A layer's download begins (`size` from its descriptor, None when not known)."""

    def advanced(self, digest: str, done: int) -> None:
        """`done` more bytes of the layer arrived (a resumed download reports what it had first)."""

    def finished(self, digest: str, outcome: Outcome) -> None:
        """The layer is in place, was there already, or failed; the last call for it."""

    def close(self) -> None:
        """The pass is over: a live display goes away."""


class NoProgress:
    """`--quiet`, `--json` and library callers: nothing."""

    def started(self, digest: str, size: int | None) -> None:
        pass

    def advanced(self, digest: str, done: int) -> None:
        pass

    def finished(self, digest: str, outcome: Outcome) -> None:
        pass

    def close(self) -> None:
        pass


class PlainProgress:
    """One line when a layer starts and one when it ends: readable in a log, greppable by digest.
    Bytes are counted but not printed per chunk (a log is not a bar)."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream, self._lock = stream, threading.Lock()
        self._layers: dict[str, tuple[float, int]] = {}

    def started(self, digest: str, size: int | None) -> None:
        with self._lock:
            self._layers[digest] = (time.monotonic(), 0)
            self._write(f"layer {digest}: fetching {_size(size)}")

    def advanced(self, digest: str, done: int) -> None:
        with self._lock:
            began, have = self._layers.get(digest, (time.monotonic(), 0))
            self._layers[digest] = (began, have + done)

    def finished(self, digest: str, outcome: Outcome) -> None:
        with self._lock:
            began, have = self._layers.pop(digest, (None, 0))
            if began is None:
                self._write(f"layer {digest}: {outcome}")
            else:
                self._write(f"layer {digest}: {outcome}, {have} bytes in {time.monotonic() - began:.2f} s")

    def close(self) -> None:
        pass

    def _write(self, line: str) -> None:
        print(line, file=self.stream, flush=True)


class TerminalProgress:
    """A bar per layer being fetched (short digest, bytes done of size, speed); a finished
    layer's bar leaves one line above the live ones. Skipped layers show nothing."""

    def __init__(self, console: Console) -> None:
        self.console, self._lock = console, threading.Lock()
        self._bars = RichProgress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                  TransferSpeedColumn(), console=console, transient=True)
        self._tasks: dict[str, TaskID] = {}
        self._running = False

    def started(self, digest: str, size: int | None) -> None:
        with self._lock:
            if not self._running:
                self._bars.start()
                self._running = True
            self._tasks[digest] = self._bars.add_task(_short(digest), total=size)

    def advanced(self, digest: str, done: int) -> None:
        with self._lock:
            if digest in self._tasks:
                self._bars.advance(self._tasks[digest], done)

    def finished(self, digest: str, outcome: Outcome) -> None:
        with self._lock:
            task = self._tasks.pop(digest, None)
            if task is None:
                return
            done = next(each.completed for each in self._bars.tasks if each.id == task)
            self._bars.remove_task(task)
            self._bars.console.print(f"{outcome} {_short(digest)} ({int(done)} bytes)", highlight=False)

    def close(self) -> None:
        with self._lock:
            if self._running:
                self._bars.stop()
                self._running = False


class Guarded:
    """A display that breaks (a closed terminal, a bug) must never fail a publish: its first
    error is logged, and it is not called again."""

    def __init__(self, progress: Progress) -> None:
        self.progress, self._broken = progress, False

    def started(self, digest: str, size: int | None) -> None:
        self._call("started", digest, size)

    def advanced(self, digest: str, done: int) -> None:
        self._call("advanced", digest, done)

    def finished(self, digest: str, outcome: Outcome) -> None:
        self._call("finished", digest, outcome)

    def close(self) -> None:
        self._call("close")

    def _call(self, name: str, *args: object) -> None:
        if self._broken:
            return
        try:
            getattr(self.progress, name)(*args)
        except Exception as error:  # noqa: BLE001 - the layers matter, their display does not
            self._broken = True
            log.warning("progress display turned off: %s", error)


def for_stream(stream: IO[str]) -> Progress:
    """A bar on a terminal, plain lines on anything else."""
    if stream.isatty():
        return TerminalProgress(Console(file=stream))
    return PlainProgress(stream)


def counted(open_blob: Callable[[str], ContextManager[IO[bytes]]], advanced: Callable[[str, int], None],
            sizes: dict[str, int | None]) -> Callable[[str], ContextManager[IO[bytes]]]:
    """For local sources (oci:, oci-archive:), read while extracted: the layer counts as done,
    all its bytes, once extracted (a registry download reports each chunk, blob_spool.py)."""
    @contextlib.contextmanager
    def opened(digest: str) -> Iterator[IO[bytes]]:
        with open_blob(digest) as blob:
            yield blob
        advanced(digest, int(sizes.get(digest) or 0))
    return opened


def _short(digest: str) -> str:
    return digest.split(":", 1)[-1][:12]


def _size(size: int | None) -> str:
    return f"{size} bytes" if size is not None else "(size unknown)"
