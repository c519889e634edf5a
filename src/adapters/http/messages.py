"""What a handler sees and answers: plain frozen values, no framework types."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class HttpRequest:
    """One parsed request; path and query are percent-decoded, UTF-8 checked."""

    method: str
    path: str
    query: Mapping[str, tuple[str, ...]]
    headers: Mapping[str, str]
    body: bytes
    raw_target: str


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]


def json_response(status: int, payload: object, headers: tuple[tuple[str, str], ...] = ()) -> HttpResponse:
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=True).encode() + b"\n"
    return HttpResponse(status, body, "application/json", tuple(headers))


def error_response(status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> HttpResponse:
    """Every error this codebase answers over HTTP has the same JSON shape."""
    return json_response(status, {"error": message}, headers)
