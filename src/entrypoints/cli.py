"""The command line every snapmux daemon shares, light enough for `--version` and `--help`.

An operator's `--version` or `--help` must answer at once, so this module imports the standard
library only (argparse): grpc, protobuf and pydantic load after the arguments are parsed, in the
daemon's `_start`. The flags are spelled the same in all three daemons, as containerd's are.
"""

from __future__ import annotations

import argparse

from snapmux import __version__

LOG_LEVELS = {
    "trace": "trace", "debug": "debug", "info": "info", "warn": "warning", "warning": "warning",
    "error": "error", "fatal": "fatal", "panic": "fatal", "critical": "fatal",
}
"""logrus's level names (and Python's `warning`/`critical`), in any case, to the one each means.
`trace` is debug plus the libraries' own chatter (grpc, httpx); `panic` and `fatal` both log
only what stops the daemon."""

LOG_FORMATS = ("text", "json")

EXIT_OK, EXIT_UNUSABLE, EXIT_CONFIG = 0, 1, 2


class ConfigError(Exception):
    """A bad config file or value: one line, `config error: <key>: <reason>`, and exit 2."""


class StartError(Exception):
    """The daemon could not start (a socket, a store, a directory): one line and exit 1."""


def log_level(value: object) -> str:
    """The canonical name of a logrus level, whatever its case; ValueError names the choices."""
    level = LOG_LEVELS.get(str(value).lower())
    if level is None:
        raise ValueError(f"unknown log level {value!r} (one of trace, debug, info, warn, warning, error, fatal, panic)")
    return level


def daemon_parser(prog: str, description: str, epilog: str | None = None) -> argparse.ArgumentParser:
    """The flags all daemons have; each adds `--address`/`--root` where they apply. Values left
    out are None, so the environment and the file still decide (flags > env > file > defaults)."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", metavar="FILE", help="TOML config file")
    parser.add_argument(
        "--log-level", metavar="LEVEL",
        help="trace, debug, info, warn (warning), error, fatal or panic, in any case",
    )
    parser.add_argument(
        "--log-format", metavar="text|json",  # checked by the settings: a bad one is a config error like any
        help="text: logrus's time=... level=... msg=... key=value lines (default); json: one object per line",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser
