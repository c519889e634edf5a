"""`http-address-resolver`: flags, logging, settings, then serve until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from dependency_injector.wiring import Provide, inject

from snapmux.adapters.http.server import HttpServer
from snapmux.entrypoints.http_address_resolver.container import Container
from snapmux.entrypoints.http_address_resolver.settings import load_settings
from snapmux.entrypoints.lifecycle import StopSignals, configure_logging, exit_on

PROG = "http-address-resolver"
log = logging.getLogger(PROG)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description="Resolves containerd namespaces to microVM snapshotter addresses over HTTP.")
    parser.add_argument("--config", type=Path, help="TOML configuration file")
    parser.add_argument("--address", help="host:port to listen on (default 127.0.0.1:10001)")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR")
    return parser.parse_args(argv)


@inject
async def serve(stop: StopSignals, server: HttpServer = Provide[Container.server]) -> None:
    """Logs the bound address(es) (port 0 picks one; tests read it from the log) and runs until a signal."""
    await stop.serve_until_signalled(log, [f"listening on http://{where}" for where in server.listening])


async def run(container: Container) -> None:
    stop = StopSignals()
    try:
        await serve(stop)
    finally:
        await container.shutdown_resources()


def _start(args: argparse.Namespace) -> None:
    settings = load_settings(args.config, address=args.address, log_level=args.log_level)
    configure_logging(settings.log_level)
    container = Container()
    container.config.from_dict(settings.model_dump())
    container.wire(modules=[__name__])
    asyncio.run(run(container))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return exit_on(PROG, lambda: _start(args))


if __name__ == "__main__":
    sys.exit(main())
