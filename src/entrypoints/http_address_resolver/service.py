"""http-address-resolver as a running service: settings, logging, then serve until a signal."""

from __future__ import annotations

import argparse
import logging

from snapmux.entrypoints.http_address_resolver.container import Container
from snapmux.entrypoints.http_address_resolver.settings import load_settings
from snapmux.entrypoints.lifecycle import StopSignals, exit_on, run_event_loop
from snapmux.entrypoints.logs import configure_logging

PROG = "http-address-resolver"
log = logging.getLogger(PROG)


async def serve(stop: StopSignals, container: Container) -> None:
    """Logs the bound address(es) (port 0 picks one; tests read it from the log) and runs until a signal.
    Only the server and what it needs start: the ttrpc client is built only for its own backend."""
    server = await container.server()
    await stop.serve_until_signalled(log, [f"listening on http://{where}" for where in server.listening])


async def run(container: Container) -> None:
    stop = StopSignals()
    try:
        await serve(stop, container)
    finally:
        await container.shutdown_resources()


def _start(args: argparse.Namespace) -> None:
    settings = load_settings(args.config, address=args.address, log_level=args.log_level, log_format=args.log_format)
    configure_logging(settings.log_level, settings.log_format)
    run_event_loop(run(Container(settings=settings)))


def main(args: argparse.Namespace) -> int:
    return exit_on(PROG, lambda: _start(args))
