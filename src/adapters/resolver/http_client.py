"""The demux's side of the resolver: `AddressResolver` over HTTP (httpx).

It trusts nothing it reads: a timeout or refused connection, any non-2xx other
than the statuses that stand for a code (`wire.error_from_http`: 400, 404), and
any malformed document are `UnavailableError`, with a message naming the field
at fault. Nothing is cached here, so a failed answer is simply
asked again next time; caching good answers is the demux's business.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from snapmux.adapters.resolver.wire import address_from_json, error_from_http
from snapmux.domain.errors import UnavailableError
from snapmux.domain.model import SnapshotterAddress
from snapmux.domain.namespaces import validate_namespace

MAX_RESPONSE_BYTES = 64 * 1024


class HttpAddressResolver:
    def __init__(self, base_url: str, *, timeout: float = 2.0, transport: httpx.AsyncBaseTransport | None = None):
        self.base_url = base_url.rstrip("/")
        self._client = httpx.AsyncClient(base_url=self.base_url, timeout=timeout, transport=transport)

    async def resolve(self, namespace: str) -> SnapshotterAddress:
        validate_namespace(namespace)
        where = f"resolver {self.base_url}"
        try:
            response = await self._client.get("/address", params={"namespace": namespace})
        except httpx.TimeoutException:
            raise UnavailableError(f"{where}: timed out resolving {namespace!r}") from None
        except httpx.HTTPError as error:
            raise UnavailableError(f"{where}: {type(error).__name__}: {error}") from None
        message = _error_text(response)
        error = error_from_http(response.status_code)
        if error is not None:
            raise error(f"{where}: {message}")
        if not 200 <= response.status_code < 300:
            raise UnavailableError(f"{where}: HTTP {response.status_code}: {message}")
        return address_from_json(_json(response, where), namespace, source=where)

    async def aclose(self) -> None:
        await self._client.aclose()


@asynccontextmanager
async def http_address_resolver(base_url: str, *, timeout: float = 2.0) -> AsyncIterator[HttpAddressResolver]:
    """The resolver as an async resource: the client's connections close on exit."""
    resolver = HttpAddressResolver(base_url, timeout=timeout)
    try:
        yield resolver
    finally:
        await resolver.aclose()


def _json(response: httpx.Response, where: str) -> object:
    if len(response.content) > MAX_RESPONSE_BYTES:
        raise UnavailableError(f"{where}: response larger than {MAX_RESPONSE_BYTES} bytes")
    try:
        return json.loads(response.content)
    except ValueError as error:
        raise UnavailableError(f"{where}: response is not JSON: {error}") from None


def _error_text(response: httpx.Response) -> str:
    """The agent's `{"error": ...}` text when there is one, else a snippet of the body."""
    try:
        payload = json.loads(response.content)
    except ValueError:
        return response.text[:200] or response.reason_phrase
    if isinstance(payload, dict) and isinstance(payload.get("error"), str):
        return payload["error"]
    return response.text[:200]
