"""The daemons' log lines, as containerd's ecosystem writes them (logrus), in text or JSON.

Text is logrus's `time=... level=info msg="..." key=value` (logfmt), JSON one object per line
with `time`, `level`, `msg` and the fields; times are RFC 3339 in UTC. The fields are a
record's `extra=` (`log.debug("call", extra={"method": ...})`), so the code logs through the
standard `logging` API everywhere and only this module knows the format (structlog renders it).
Formatting runs only for records that pass the level check: a disabled debug line costs one
`isEnabledFor`.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog
from structlog.stdlib import ExtraAdder, ProcessorFormatter

_PYTHON_LEVELS = {"trace": logging.DEBUG, "debug": logging.DEBUG, "info": logging.INFO,
                  "warning": logging.WARNING, "error": logging.ERROR, "fatal": logging.CRITICAL}

LIBRARY_LOGGERS = ("grpc", "httpx", "httpcore", "asyncio")
"""Their debug chatter (grpc._cython's polling, each HTTP request) is not the daemon's: shown
only at `trace`."""


def _logrus_level(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    """logrus's names: `warning`, and `fatal` for what Python calls critical."""
    record: logging.LogRecord = event["_record"]
    event["level"] = "fatal" if record.levelno >= logging.CRITICAL else record.levelname.lower()
    return event


def _quoted_time(render: Any) -> Any:
    """logrus quotes the time (it holds ':'); structlog's logfmt quotes only spaces, '=' and '"'."""

    def quoted(logger: Any, name: str, event: dict) -> str:
        line = render(logger, name, event)
        head, _, rest = line.partition(" ")
        if head.startswith("time=") and not head.startswith('time="'):
            return f'time="{head[len("time="):]}" {rest}'
        return line

    return quoted


def formatter(log_format: str) -> logging.Formatter:
    """`text` (logfmt, time/level/msg first) or `json`; the record's extra fields follow."""
    renderer: Any = (
        structlog.processors.JSONRenderer(sort_keys=False)
        if log_format == "json"
        else _quoted_time(structlog.processors.LogfmtRenderer(key_order=["time", "level", "msg"], bool_as_flag=False))
    )
    return ProcessorFormatter(
        foreign_pre_chain=[
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="time"),
            _logrus_level,
            ExtraAdder(),
        ],
        processors=[
            ProcessorFormatter.remove_processors_meta,
            structlog.processors.EventRenamer("msg"),
            structlog.processors.format_exc_info,
            renderer,
        ],
    )


def configure_logging(level: str, log_format: str = "text") -> None:
    """`level` is a canonical logrus name (`cli.log_level`); stderr is what supervisors keep."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_PYTHON_LEVELS[level])
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if level == "trace" else max(logging.WARNING, root.level))
