"""Strict HTTP/1.1 request-head parsing.

Hostile input must end in a 4xx, never in a 500: every malformed piece raises
`BadRequest` with the status to answer. Percent-decoding is strict (no lenient
pass-through of `%zz` as urllib does) and decoded bytes must be UTF-8.
"""

from __future__ import annotations

import re
from types import MappingProxyType
from typing import Mapping

_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_TARGET = re.compile(rb"^[\x21-\x7e]+$")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_VERSIONS = (b"HTTP/1.1", b"HTTP/1.0")


class BadRequest(Exception):
    """A request we refuse; `status` is the 4xx/5xx to answer, the connection then closes."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def parse_request_line(line: bytes) -> tuple[str, bytes, str]:
    """`METHOD SP target SP version`; returns method, raw target bytes, version."""
    parts = line.rstrip(b"\r\n").split(b" ")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise BadRequest(400, "malformed request line")
    method, target, version = parts
    if not _TOKEN.match(method):
        raise BadRequest(400, "malformed method")
    if version not in _VERSIONS:
        raise BadRequest(505 if version.startswith(b"HTTP/") else 400, "unsupported HTTP version")
    if not _TARGET.match(target):
        raise BadRequest(400, "request target must be printable ASCII")
    return method.decode("ascii"), target, version.decode("ascii")


def percent_decode(text: str, *, plus_is_space: bool) -> str:
    if plus_is_space:
        text = text.replace("+", " ")
    if _BAD_ESCAPE.search(text):
        raise BadRequest(400, "malformed percent-encoding")
    raw = bytearray()
    i = 0
    while i < len(text):
        if text[i] == "%":
            raw.append(int(text[i + 1 : i + 3], 16))
            i += 3
        else:
            raw.extend(text[i].encode("ascii"))
            i += 1
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(400, "percent-encoded bytes are not UTF-8") from None


def parse_target(target: bytes) -> tuple[str, Mapping[str, tuple[str, ...]]]:
    """Origin-form only (`/path?query`); absolute-form and `*` are refused."""
    text = target.decode("ascii")
    if not text.startswith("/"):
        raise BadRequest(400, "request target must be an absolute path")
    path, _, query = text.partition("?")
    path, _, _fragment = path.partition("#")
    query, _, _fragment = query.partition("#")
    return percent_decode(path, plus_is_space=False), parse_query(query)


def parse_query(query: str) -> Mapping[str, tuple[str, ...]]:
    params: dict[str, list[str]] = {}
    for pair in query.split("&"):
        if not pair:
            continue
        name, _, value = pair.partition("=")
        key = percent_decode(name, plus_is_space=True)
        params.setdefault(key, []).append(percent_decode(value, plus_is_space=True))
    return MappingProxyType({key: tuple(values) for key, values in params.items()})


def parse_header_line(line: bytes, headers: dict[str, str]) -> None:
    """Adds one `Name: value` line; repeated names are joined with ", " (RFC 9110 5.3)."""
    line = line.rstrip(b"\r\n")
    if line[:1] in (b" ", b"\t"):
        raise BadRequest(400, "obsolete header line folding")
    name, colon, value = line.partition(b":")
    if not colon or not _TOKEN.match(name):
        raise BadRequest(400, "malformed header line")
    key = name.decode("ascii").lower()
    text = value.strip(b" \t").decode("latin-1")
    headers[key] = f"{headers[key]}, {text}" if key in headers else text


def content_length(headers: Mapping[str, str], limit: int) -> int:
    """Bodies are length-delimited only; chunked requests are not supported (the APIs are GETs)."""
    if "transfer-encoding" in headers:
        raise BadRequest(411, "chunked request bodies are not supported; send Content-Length")
    raw = headers.get("content-length")
    if raw is None:
        return 0
    values = {v.strip() for v in raw.split(",")}
    if len(values) != 1 or not next(iter(values)).isdigit() or not next(iter(values)).isascii():
        raise BadRequest(400, "malformed Content-Length")
    length = int(next(iter(values)))
    if length > limit:
        raise BadRequest(413, f"request body larger than {limit} bytes")
    return length


def wants_keep_alive(version: str, headers: Mapping[str, str]) -> bool:
    tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    if version == "HTTP/1.0":
        return "keep-alive" in tokens
    return "close" not in tokens
