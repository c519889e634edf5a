"""A registry that wants bearer tokens, as Docker Hub, ghcr.io and Harbor do, for the publisher's tests.

    async with TokenGate.start(registry.host) as gate:   # in front of a real docker-registry
        publish(["--plain-http", "--target", layout, f"{gate.host}/repo:tag"])

Without `Authorization: Bearer <token>` every /v2/ request gets 401 and the challenge
`Bearer realm="http://<gate>/token",service=...,scope="repository:<repo>:pull"`; `/token` hands
out a token: to anyone, or only with Basic `credentials` (a private repository), or to no one
(`refuse_tokens`). Authorized requests are forwarded to the registry unchanged. What it saw is
kept for the test to check.
"""

from __future__ import annotations

import contextlib
import re
import secrets
from collections.abc import AsyncIterator

import httpx

from snapmux.adapters.http.server import HttpRequest, HttpResponse, HttpServer, error_response, json_response

SERVICE = "snapmux-test-registry"
_REPO = re.compile(r"^/v2/(?P<repo>.+)/(?:manifests|blobs)/[^/]+$")


class TokenGate:
    def __init__(self, upstream: str, refuse_tokens: bool = False, credentials: tuple[str, str] | None = None) -> None:
        self.upstream = httpx.AsyncClient(base_url=f"http://{upstream}", timeout=60)
        self.refuse_tokens = refuse_tokens
        self.basic = httpx.BasicAuth(*credentials) if credentials else None
        self.token = secrets.token_hex(16)
        self.token_requests: list[dict[str, str]] = []
        self.challenged: list[str] = []
        self.host = ""

    @classmethod
    @contextlib.asynccontextmanager
    async def start(cls, upstream: str, refuse_tokens: bool = False,
                    credentials: tuple[str, str] | None = None) -> AsyncIterator[TokenGate]:
        gate = cls(upstream, refuse_tokens, credentials)
        server = HttpServer(gate.handle, name="token-gate", access_log=False)
        gate.host = f"127.0.0.1:{await server.start_tcp('127.0.0.1', 0)}"
        try:
            yield gate
        finally:
            await server.stop(1.0)
            await gate.upstream.aclose()

    async def handle(self, request: HttpRequest) -> HttpResponse:
        if request.path == "/token":
            self.token_requests.append({key: values[0] for key, values in request.query.items()})
            if self.refuse_tokens or not self._credentials_match(request):
                return error_response(403, "denied")
            return json_response(200, {"token": self.token})
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return self._challenge(request.path)
        answer = await self.upstream.get(request.raw_target, headers={"Accept": request.headers.get("accept", "*/*")})
        return HttpResponse(answer.status_code, answer.content, answer.headers.get("content-type", ""))

    def _credentials_match(self, request: HttpRequest) -> bool:
        if self.basic is None:
            return True
        expected = next(self.basic.auth_flow(httpx.Request("GET", "http://gate/"))).headers["Authorization"]
        return request.headers.get("authorization") == expected

    def _challenge(self, path: str) -> HttpResponse:
        self.challenged.append(path)
        found = _REPO.match(path)
        scope = f',scope="repository:{found["repo"]}:pull"' if found else ""
        challenge = f'Bearer realm="http://{self.host}/token",service="{SERVICE}"{scope}'
        return error_response(401, "authentication required", (("WWW-Authenticate", challenge),))
