"""cvmfs-snapshotter's command line. Imports only argparse: `--help` and `--version` answer
before grpc, protobuf and pydantic load (`service` imports them, after the arguments parse)."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from snapmux.entrypoints.cli import EXIT_CONFIG, daemon_parser

PROG = "cvmfs-snapshotter"
DESCRIPTION = """\
A containerd remote snapshotter (a [proxy_plugins] entry) with the overlayfs snapshotter's
semantics: snapshots and their SQLite metadata live under --root. Layers already present in a
CVMFS repository's layout (<mountpoint>/.layers/<xx>/<hex>/layerfs) are mounted in place
instead of being downloaded and unpacked.

subcommands:
  publish     write an image's layers into that layout (cvmfs-snapshotter publish --help)"""
EPILOG = """\
Settings come from the flags, then SNAPMUX_CVMFS_* environment variables, then the --config
file, then the defaults. Bad settings exit 2 (config error: <key>: <reason>), a socket or
store that cannot be used exits 1, SIGTERM/SIGINT is a clean shutdown (exit 0)."""


def parser() -> argparse.ArgumentParser:
    parser = daemon_parser(PROG, DESCRIPTION, EPILOG)
    parser.add_argument("--root", metavar="DIR", help="state directory (default /var/lib/containerd-cvmfs-grpc)")
    parser.add_argument(
        "--address", metavar="SOCKET",
        help="unix socket path, or vsock://PORT inside a microVM (default "
             "/run/containerd-cvmfs-grpc/containerd-cvmfs-grpc.sock)",
    )
    return parser


def _publish(argv: Sequence[str]) -> int:
    """Lazily: the publish subcommand is another module, absent in builds without it."""
    try:
        module = importlib.import_module("snapmux.entrypoints.cvmfs_snapshotter.publish")
    except ModuleNotFoundError as error:
        if error.name != "snapmux.entrypoints.cvmfs_snapshotter.publish":
            raise
        print(f"{PROG}: the publish subcommand is not available in this build", file=sys.stderr)
        return EXIT_CONFIG
    return int(module.main(list(argv)) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["publish"]:
        return _publish(argv[1:])
    args = parser().parse_args(argv)
    from snapmux.entrypoints.cvmfs_snapshotter import service  # the heavy part, once the flags are read

    return service.main(args)


if __name__ == "__main__":
    sys.exit(main())
