"""demux-snapshotter's command line. Imports only argparse: `--help` and `--version` answer
before grpc, protobuf and pydantic load (`service` imports them, after the arguments parse)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from snapmux.entrypoints.cli import daemon_parser

PROG = "demux-snapshotter"
DEFAULT_CONFIG = "/etc/demux-snapshotter/config.toml"
"""The Go original's default; here (settings imports it) so that --help needs no pydantic."""
DESCRIPTION = """\
A containerd proxy snapshotter for firecracker-containerd: each call is routed by its containerd
namespace to the snapshotter inside that namespace's Firecracker microVM (found by asking an
address resolver over HTTP, dialled over the VM's hybrid vsock). Reads the Go original's config
file as it is."""
EPILOG = f"""\
Settings come from the flags, then DEMUX_SNAPSHOTTER_<SECTION>__<KEY> environment variables, then
the --config file (default {DEFAULT_CONFIG}, used when present), then the defaults. Bad settings
exit 2 (config error: <key>: <reason>), a socket that cannot be used exits 1, SIGTERM/SIGINT is a
clean shutdown (exit 0)."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = daemon_parser(PROG, DESCRIPTION, EPILOG)
    parser.add_argument(
        "--address", metavar="SOCKET", help="unix socket to listen on ([snapshotter.listener] address; default "
        "/var/lib/demux-snapshotter/snapshotter.sock)",
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    from snapmux.entrypoints.demux_snapshotter import service  # the heavy part, once the flags are read

    return service.main(args)


if __name__ == "__main__":
    sys.exit(main())
