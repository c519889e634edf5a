"""Registry authentication: the token exchange public registries demand even for anonymous
pulls, and credentials from a containers/docker auth file for private repositories.

Docker Hub, ghcr.io, Harbor (registry.cern.ch) and quay.io answer an unauthenticated request
with 401 and `WWW-Authenticate: Bearer realm="...",service="...",scope="..."`; the client
fetches a token from the realm (with the user's credentials, if any, as Basic auth) and retries
with `Authorization: Bearer` (distribution's token authentication specification). A registry
that answers `Basic` gets the credentials directly.

The registry is not trusted with more than its own credentials: they go to the token service
it names only over https when the registry itself is reached over https (a plain-http realm
would be a downgrade anyone on the path could read).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from collections.abc import Generator

import httpx

from snapmux.domain.errors import InvalidArgumentError, UnavailableError

_PARAM = re.compile(r'(\w+)="([^"]*)"')

Credentials = tuple[str, str]

MAX_TOKEN_ANSWER = 1 << 20
"""A token answer is a few KiB of JSON; a realm sending more is refused, not buffered."""

_DOCKER_HUB = {"docker.io", "registry-1.docker.io", "index.docker.io"}
"""docker login stores Docker Hub under `https://index.docker.io/v1/`; pulls go to registry-1."""


def default_authfile() -> str | None:
    """podman's `REGISTRY_AUTH_FILE`, else docker's `~/.docker/config.json` when it exists."""
    configured = os.environ.get("REGISTRY_AUTH_FILE")
    if configured:
        return configured
    docker = os.path.expanduser("~/.docker/config.json")
    return docker if os.path.isfile(docker) else None


def credentials_for(host: str, authfile: str | None) -> Credentials | None:
    """The `auths` entry for `host` (keys may carry a scheme or path, as docker writes them)."""
    if not authfile:
        return None
    try:
        with open(authfile, encoding="utf-8") as handle:
            auths = json.load(handle).get("auths", {})
        names = _DOCKER_HUB if host in _DOCKER_HUB else {host}
        entry = next((v for k, v in auths.items() if _host_of(k) in names), None)
        if entry is None:
            return None
        user, sep, password = base64.b64decode(entry["auth"], validate=True).decode().partition(":")
    except (OSError, ValueError, KeyError, TypeError, AttributeError, binascii.Error) as error:
        raise InvalidArgumentError(f"auth file {authfile}: {type(error).__name__}: {error}") from None
    if not sep or not user:
        raise InvalidArgumentError(f"auth file {authfile}: the entry for {host} is not base64 of user:password")
    return user, password


def _host_of(key: str) -> str:
    return key.split("://", 1)[-1].split("/", 1)[0]


class RegistryAuth(httpx.Auth):
    """Answers 401 challenges; a token is reused until the next challenge.

    One publish reads one repository, so one token serves every later request; a 401 that
    comes back with it (expired) fetches a fresh one once. Blob bodies are streamed: only the
    small token answer is read here (httpx's `requires_response_body` would buffer them all).
    """

    def __init__(self, credentials: Credentials | None = None) -> None:
        self._basic = _basic_header(*credentials) if credentials else None
        self._authorization: str | None = None

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self._authorization:
            request.headers["Authorization"] = self._authorization
        response = yield request
        challenge = bearer_challenge(response)
        if challenge is not None:
            if self._basic and request.url.scheme == "https" and not challenge["realm"].startswith("https://"):
                raise UnavailableError(f"registry {request.url.host} names the plain-http token service "
                                       f"{challenge['realm']}; its credentials are sent over https only")
            token_response = yield token_request(challenge, self._basic)
            _read_small(token_response, challenge)
            self._authorization = f"Bearer {token_from(token_response, challenge)}"
        elif self._basic and _scheme(response) == "basic" and self._authorization != self._basic:
            self._authorization = self._basic
        else:
            return
        request.headers["Authorization"] = self._authorization
        yield request


def _read_small(response: httpx.Response, challenge: dict[str, str]) -> None:
    """Reads the token answer no further than MAX_TOKEN_ANSWER, whatever the realm sends. The body
    is kept as the response's content (httpx's own `read()` after the flow is then a no-op)."""
    body = bytearray()
    for chunk in response.iter_bytes():
        body += chunk
        if len(body) > MAX_TOKEN_ANSWER:
            response.close()
            raise UnavailableError(f"token service {challenge['realm']} answered more than {MAX_TOKEN_ANSWER} bytes")
    response._content = bytes(body)  # what Response.read() itself stores


def _basic_header(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def _scheme(response: httpx.Response) -> str | None:
    if response.status_code != 401:
        return None
    return response.headers.get("www-authenticate", "").partition(" ")[0].lower() or None


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


def token_request(challenge: dict[str, str], basic: str | None = None) -> httpx.Request:
    query = {key: challenge[key] for key in ("service", "scope") if challenge.get(key)}
    return httpx.Request("GET", challenge["realm"], params=query, headers={"Authorization": basic} if basic else {})


def token_from(response: httpx.Response, challenge: dict[str, str]) -> str:
    """The token of a realm's answer; a refusal or a malformed answer names the realm."""
    where = f"token service {challenge['realm']} (scope {challenge.get('scope', '-')})"
    if response.status_code != 200:
        raise UnavailableError(f"{where} refused a token: HTTP {response.status_code}")
    try:
        document = response.json()
        token = document.get("token") or document.get("access_token")
    except (ValueError, AttributeError):
        token = None
    if not isinstance(token, str) or not token:
        raise UnavailableError(f"{where} answered without a token")
    return token
