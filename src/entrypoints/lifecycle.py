"""What every snapmux daemon does the same way around its own start and stop steps.

Supervisors (systemd, containerd's VM agent, the tests) stop a daemon with SIGTERM and read its
exit status and last stderr line, so all three daemons must answer them alike: a signal is a
clean, ordered shutdown and exit 0; a bad config is one line and exit 2; a socket or directory
the daemon cannot use is one line and exit 1. The shutdown order itself stays in each `main`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator
from typing import Any, TypeVar

import uvloop

from snapmux.adapters.systemd_notify import READY, STOPPING, notify
from snapmux.entrypoints.cli import EXIT_CONFIG, EXIT_OK, EXIT_UNUSABLE, ConfigError, StartError

__all__ = ["EXIT_CONFIG", "EXIT_OK", "EXIT_UNUSABLE", "StopSignals", "exit_on", "listened", "listening_on", "reason"]

T = TypeVar("T")


EVENT_LOOP_ENV = "SNAPMUX_EVENT_LOOP"
"""`uvloop` (the default) or `asyncio`: the tests run the daemons on both, and an operator may
fall back to asyncio's own loop without a new build."""

_LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "uvloop": uvloop.new_event_loop,
    "asyncio": asyncio.new_event_loop,
}


def run_event_loop(main: Coroutine[Any, Any, None]) -> None:
    """asyncio.run on uvloop, which grpc.aio supports: the same daemon, less of its CPU time per call
    spent in the loop (measured with bench/hot_path_bench.py)."""
    choice = os.environ.get(EVENT_LOOP_ENV, "uvloop")
    if choice not in _LOOPS:
        main.close()
        raise ConfigError(f"{EVENT_LOOP_ENV}: {choice!r} is not an event loop (want one of {', '.join(_LOOPS)})")
    with asyncio.Runner(loop_factory=_LOOPS[choice]) as runner:
        runner.run(main)


def reason(error: OSError, about: str = "") -> str:
    """What the system said, as an operator reads it: `No such file or directory`, without
    Python's `[Errno 2]` prefix or class name; the path too, unless it is (a folder of) `about`."""
    text = error.strerror or (str(error.args[0]) if error.args else "")
    if error.errno and text.startswith("error while attempting to bind"):  # asyncio's wrapping
        text = os.strerror(error.errno)
    if error.filename and not about.startswith(os.fsdecode(error.filename)):
        text = f"{text}: {os.fsdecode(error.filename)}"
    return text or "failed"


@contextlib.contextmanager
def listening_on(address: str) -> Iterator[None]:
    """A socket or port the daemon cannot listen on: `cannot listen on <address>: <reason>`."""
    try:
        yield
    except OSError as error:
        said = reason(error, address).removeprefix(f"cannot listen on {address}: ")
        raise StartError(f"cannot listen on {address}: {said}") from None


@contextlib.asynccontextmanager
async def listened(address: str | None, resource: AsyncIterator[T]) -> AsyncIterator[T]:
    """An adapter's listening Resource (an async generator) whose start fails as `listening_on` says."""
    with listening_on(address or ""):
        value = await anext(resource)
    try:
        yield value
    finally:
        await resource.aclose()  # type: ignore[attr-defined]


class StopSignals:
    """SIGTERM/SIGINT as an event. Each daemon creates it first thing in its running loop, before
    any socket listens: whoever waits for a socket (a supervisor, a test) may signal at once and
    still get a clean shutdown, not a kill. A signal during startup is kept and ends the daemon
    as soon as it is up. The handlers stay in place during the shutdown, so a second signal
    cannot cut it short."""

    def __init__(self) -> None:
        self._stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stop.set)

    async def serve_until_signalled(self, log: logging.Logger, ready: Iterable[str]) -> None:
        """Logs the `ready` lines and tells systemd (READY=1: every listener is up), then returns
        on the first signal, having told systemd the daemon is stopping (STOPPING=1)."""
        for line in ready:
            log.info("%s", line)
        notify(READY)
        await self._stop.wait()
        log.info("shutting down")
        notify(STOPPING)


def exit_on(prog: str, start: Callable[[], object]) -> int:
    """Runs `start` (load settings, then serve) and turns the operator's errors into one line
    on stderr and an exit status; a traceback would bury the cause."""
    try:
        start()
    except ConfigError as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return EXIT_CONFIG
    except StartError as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return EXIT_UNUSABLE
    except OSError as error:  # ours has no errno and says it all; the system's gets what it was about
        print(f"{prog}: {reason(error) if error.errno is None else f'cannot start: {reason(error)}'}", file=sys.stderr)
        return EXIT_UNUSABLE
    return EXIT_OK
