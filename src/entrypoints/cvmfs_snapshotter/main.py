"""cvmfs-snapshotter: the daemon's command line, signals and lifecycle.

    cvmfs-snapshotter [--config FILE] [--root DIR] [--address SOCKET|vsock://PORT] [--log-level LEVEL]
    cvmfs-snapshotter publish ...     (handed to snapmux.entrypoints.cvmfs_snapshotter.publish:main)
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from dependency_injector.wiring import Provide, inject

from snapmux.entrypoints.cvmfs_snapshotter.container import Container, Listening
from snapmux.entrypoints.cvmfs_snapshotter.settings import load_settings, vsock_port
from snapmux.entrypoints.lifecycle import StopSignals, configure_logging, exit_on, run_event_loop

PROG = "cvmfs-snapshotter"
log = logging.getLogger(PROG)

try:
    from importlib.metadata import version as _version

    VERSION = _version("snapmux")
except Exception:  # noqa: BLE001 - not installed as a distribution
    VERSION = "unknown"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="TOML config file")
    parser.add_argument("--root", help="snapshotter state directory (default /var/lib/containerd-cvmfs-grpc)")
    parser.add_argument("--address", help="unix socket path or vsock://PORT to listen on")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error", "critical"])
    parser.add_argument("--version", action="version", version=f"%(prog)s {VERSION}")
    return parser


def _publish(argv: Sequence[str]) -> int:
    """Lazily: the publish subcommand is another module, absent in builds without it."""
    try:
        module = importlib.import_module("snapmux.entrypoints.cvmfs_snapshotter.publish")
    except ModuleNotFoundError as error:
        if error.name != "snapmux.entrypoints.cvmfs_snapshotter.publish":
            raise
        print("cvmfs-snapshotter: the publish subcommand is not available in this build", file=sys.stderr)
        return 2
    return int(module.main(list(argv)) or 0)


@inject
async def serve(stop: StopSignals, listening: Listening = Provide[Container.server]) -> None:
    """Runs until SIGTERM/SIGINT; shutdown (in run) lets in-flight calls finish and deletes nothing."""
    await stop.serve_until_signalled(log, [f"ready on {listening.address}"])


async def run(container: Container) -> None:
    stop = StopSignals()
    container.wire(modules=[__name__])
    try:
        await container.init_resources()
        await serve(stop)
    finally:
        # the server first (in-flight calls finish), then the rest in reverse dependency order
        await container.server.shutdown()
        await container.shutdown_resources()
        container.unwire()


def _start(args: argparse.Namespace) -> None:
    settings = load_settings(args.config, root=args.root, address=args.address, log_level=args.log_level)
    vsock_port(settings.listen_address())  # a bad vsock:// address is a config error, before any logging
    configure_logging(settings.log_level)
    run_event_loop(run(Container(settings=settings)))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["publish"]:
        return _publish(argv[1:])
    args = _parser().parse_args(argv)
    return exit_on(PROG, lambda: _start(args))


if __name__ == "__main__":
    sys.exit(main())
