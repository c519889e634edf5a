"""cvmfs-snapshotter as a running service: settings, logging, then serve until a signal."""

from __future__ import annotations

import argparse
import logging

from snapmux.entrypoints.cvmfs_snapshotter.container import Container
from snapmux.entrypoints.cvmfs_snapshotter.settings import load_settings, vsock_port
from snapmux.entrypoints.lifecycle import StopSignals, exit_on, run_event_loop
from snapmux.entrypoints.logs import configure_logging

PROG = "cvmfs-snapshotter"
log = logging.getLogger(PROG)


async def serve(stop: StopSignals, container: Container) -> None:
    """Runs until SIGTERM/SIGINT; shutdown (in run) lets in-flight calls finish and deletes nothing."""
    listening = await container.server()
    await stop.serve_until_signalled(log, [f"ready on {listening.address}"])


async def run(container: Container) -> None:
    stop = StopSignals()
    try:
        await container.init_resources()
        await serve(stop, container)
    finally:
        # the server first (in-flight calls finish), then the rest in reverse dependency order
        await container.server.shutdown()
        await container.shutdown_resources()


def _start(args: argparse.Namespace) -> None:
    settings = load_settings(
        args.config, root=args.root, address=args.address, log_level=args.log_level, log_format=args.log_format
    )
    vsock_port(settings.listen_address())  # a bad vsock:// address is a config error, before any logging
    configure_logging(settings.log_level, settings.log_format)
    run_event_loop(run(Container(settings=settings)))


def main(args: argparse.Namespace) -> int:
    return exit_on(PROG, lambda: _start(args))
