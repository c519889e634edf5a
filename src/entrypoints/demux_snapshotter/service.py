"""demux-snapshotter as a running service: settings, logging, then serve until a signal."""

from __future__ import annotations

import argparse
import contextlib
import logging
import resource

from snapmux.entrypoints.demux_snapshotter.container import Container
from snapmux.entrypoints.demux_snapshotter.settings import load_settings
from snapmux.entrypoints.lifecycle import StopSignals, exit_on, run_event_loop
from snapmux.entrypoints.logs import configure_logging

PROG = "demux-snapshotter"
log = logging.getLogger(PROG)


async def serve(stop: StopSignals, container: Container) -> None:
    """Runs until SIGTERM/SIGINT; the ordered shutdown is run's `finally`."""
    await container.server()
    await stop.serve_until_signalled(log, ["ready"])


async def run(container: Container) -> None:
    """Start in dependency order; stop in reverse: server (drain), clients+forwarders, resolver."""
    stop = StopSignals()
    try:
        await container.metrics_listener.init()  # SD answers (with no VM yet) before the first call
        await container.resolver.init()
        await container.connector.init()
        await container.remotes.init()
        await container.server.init()
        await serve(stop, container)
    finally:
        await container.server.shutdown()
        await container.remotes.shutdown()
        await container.metrics_listener.shutdown()  # after remotes: their eviction closes proxies first
        await container.connector.shutdown()
        await container.resolver.shutdown()


def raise_open_file_limit() -> None:
    """Each VM costs ~3 descriptors (forwarding socket, gRPC's end, the vsock end): lift the soft
    limit to the hard one, as the Go runtime does for the Go original, so a few hundred VMs fit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 1 << 20, hard))


def _start(args: argparse.Namespace) -> None:
    settings = load_settings(args.config, address=args.address, log_level=args.log_level, log_format=args.log_format)
    configure_logging(settings.debug.log_level, settings.debug.log_format)  # httpx's line per resolve only at trace
    raise_open_file_limit()
    run_event_loop(run(Container(settings=settings)))


def main(args: argparse.Namespace) -> int:
    return exit_on(PROG, lambda: _start(args))
