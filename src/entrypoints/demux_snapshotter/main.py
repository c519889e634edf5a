"""demux-snapshotter: containerd proxy snapshotter routing each namespace to the snapshotter in its microVM.

    demux-snapshotter [--config FILE] [--log-level LEVEL]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import resource
import sys
from collections.abc import Sequence

import grpc
from dependency_injector.wiring import Provide, inject

from snapmux.entrypoints.demux_snapshotter.container import Container
from snapmux.entrypoints.demux_snapshotter.settings import DEFAULT_CONFIG, load_settings
from snapmux.entrypoints.lifecycle import StopSignals, configure_logging, exit_on, run_event_loop

PROG = "demux-snapshotter"
log = logging.getLogger(PROG)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--config", help=f"TOML config file (default {DEFAULT_CONFIG}, optional)")
    parser.add_argument("--log-level", help="debug, info, warn, error (overrides [debug] logLevel)")
    return parser


@inject
async def serve(stop: StopSignals, server: grpc.aio.Server = Provide[Container.server]) -> None:
    """Runs until SIGTERM/SIGINT; the ordered shutdown is run's `finally`."""
    await stop.serve_until_signalled(log, ["ready"])


async def run(container: Container) -> None:
    """Start in dependency order; stop in reverse: server (drain), clients+forwarders, resolver."""
    stop = StopSignals()
    container.wire(modules=[__name__])
    try:
        await container.metrics_listener.init()  # SD answers (with no VM yet) before the first call
        await container.resolver.init()
        await container.connector.init()
        await container.remotes.init()
        await container.server.init()
        await serve(stop)
    finally:
        await container.server.shutdown()
        await container.remotes.shutdown()
        await container.metrics_listener.shutdown()  # after remotes: their eviction closes proxies first
        await container.connector.shutdown()
        await container.resolver.shutdown()
        container.unwire()


def raise_open_file_limit() -> None:
    """Each VM costs ~3 descriptors (forwarding socket, gRPC's end, the vsock end): lift the soft
    limit to the hard one, as the Go runtime does for the Go original, so a few hundred VMs fit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 1 << 20, hard))


def _start(args: argparse.Namespace) -> None:
    settings = load_settings(args.config, args.log_level)
    configure_logging(settings.debug.log_level)
    raise_open_file_limit()
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))  # one line per resolve
    run_event_loop(run(Container(settings=settings)))


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    return exit_on(PROG, lambda: _start(args))


if __name__ == "__main__":
    sys.exit(main())
