"""What every snapmux daemon does the same way around its own start and stop steps.

Supervisors (systemd, containerd's VM agent, the tests) stop a daemon with SIGTERM and read its
exit status and last stderr line, so all three daemons must answer them alike: a signal is a
clean, ordered shutdown and exit 0; a bad config is one line and exit 2; a socket or directory
the daemon cannot use is one line and exit 1. The shutdown order itself stays in each `main`.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Iterable

from snapmux.entrypoints.settings_sources import ConfigError

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

EXIT_OK, EXIT_UNUSABLE, EXIT_CONFIG = 0, 1, 2


def configure_logging(level: str) -> None:
    """Levels are spelled in either case by the three configs; stderr is what supervisors keep."""
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT, stream=sys.stderr)


async def serve_until_signalled(log: logging.Logger, ready: Iterable[str]) -> None:
    """Returns on SIGTERM/SIGINT. The handlers are in place before `ready` is logged: whoever
    waits for that line may signal at once and still get a clean shutdown, not a kill. They stay
    in place during the shutdown, so a second signal cannot cut it short."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    for line in ready:
        log.info("%s", line)
    await stop.wait()
    log.info("shutting down")


def exit_on(prog: str, start: Callable[[], object]) -> int:
    """Runs `start` (load settings, then serve) and turns the operator's errors into one line
    on stderr and an exit status; a traceback would bury the cause."""
    try:
        start()
    except ConfigError as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return EXIT_CONFIG
    except OSError as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return EXIT_UNUSABLE
    return EXIT_OK
