"""http-address-resolver's command line. Imports only argparse: `--help` and `--version` answer
before pydantic and the backends load (`service` imports them, after the arguments parse)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from snapmux.entrypoints.cli import daemon_parser

PROG = "http-address-resolver"
DESCRIPTION = """\
Answers demux-snapshotter's question "where is the snapshotter of containerd namespace N?" over
HTTP (GET /address?namespace=N), from firecracker-containerd's control plugin, the shim-base
directory convention or a static file. GET /healthz says whether that backend can answer."""
EPILOG = """\
Settings come from the flags, then SNAPMUX_RESOLVER_* environment variables, then the --config
file, then the defaults. Bad settings exit 2 (config error: <key>: <reason>), an address that
cannot be listened on exits 1, SIGTERM/SIGINT is a clean shutdown (exit 0)."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = daemon_parser(PROG, DESCRIPTION, EPILOG)
    parser.add_argument("--address", metavar="HOST:PORT", help="where to listen (default 127.0.0.1:10001)")
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    from snapmux.entrypoints.http_address_resolver import service  # the heavy part, once the flags are read

    return service.main(args)


if __name__ == "__main__":
    sys.exit(main())
