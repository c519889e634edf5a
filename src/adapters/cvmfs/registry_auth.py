"""Registry token authentication, as public registries demand it even for anonymous pulls.

Docker Hub, ghcr.io, Harbor (registry.cern.ch) and quay.io answer an unauthenticated request
with 401 and `WWW-Authenticate: Bearer realm="...",service="...",scope="..."`; the client
fetches a token from the realm (anonymously here) and retries with `Authorization: Bearer`
(distribution's token authentication specification). Without this the publisher could read
only from registries open to all, such as a test registry on loopback.
"""

from __future__ import annotations

import re
from collections.abc import Generator

import httpx

from snapmux.domain.errors import UnavailableError

_PARAM = re.compile(r'(\w+)="([^"]*)"')


class BearerTokenAuth(httpx.Auth):
    """Anonymous bearer tokens, fetched on a 401 challenge and reused until the next one.

    One publish reads one repository, so one token serves every later request; a 401 that
    comes back with it (expired) fetches a fresh one once. Blob bodies are streamed: only the
    small token answer is read here (httpx's `requires_response_body` would buffer them all).
    """

    def __init__(self) -> None:
        self._token: str | None = None

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self._token:
            request.headers["Authorization"] = f"Bearer {self._token}"
        response = yield request
        challenge = bearer_challenge(response)
        if challenge is None:
            return
        token_response = yield token_request(challenge)
        token_response.read()
        self._token = token_from(token_response, challenge)
        request.headers["Authorization"] = f"Bearer {self._token}"
        yield request


def bearer_challenge(response: httpx.Response) -> dict[str, str] | None:
    """The Bearer challenge's parameters of a 401, else None (other 401s are answered as they are)."""
    if response.status_code != 401:
        return None
    header = response.headers.get("www-authenticate", "")
    scheme, _, params = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    found = dict(_PARAM.findall(params))
    return found if found.get("realm", "").startswith(("https://", "http://")) else None


def token_request(challenge: dict[str, str]) -> httpx.Request:
    query = {key: challenge[key] for key in ("service", "scope") if challenge.get(key)}
    return httpx.Request("GET", challenge["realm"], params=query)


def token_from(response: httpx.Response, challenge: dict[str, str]) -> str:
    """The token of a realm's answer; a refusal or a malformed answer names the realm."""
    where = f"token service {challenge['realm']} (scope {challenge.get('scope', '-')})"
    if response.status_code != 200:
        raise UnavailableError(f"{where} refused an anonymous token: HTTP {response.status_code}")
    try:
        document = response.json()
        token = document.get("token") or document.get("access_token")
    except (ValueError, AttributeError):
        token = None
    if not isinstance(token, str) or not token:
        raise UnavailableError(f"{where} answered without a token")
    return token
