"""Parsing a registry's token challenge and its token answer: bad ones are named, never a crash."""

from __future__ import annotations

import httpx
import pytest

from snapmux.adapters.cvmfs.registry_auth import bearer_challenge, token_from, token_request
from snapmux.domain.errors import UnavailableError

HUB = 'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull"'


def answer(status: int, challenge: str | None = None) -> httpx.Response:
    return httpx.Response(status, headers={"WWW-Authenticate": challenge} if challenge else {})


def test_docker_hubs_challenge_becomes_a_token_request_for_that_scope():
    challenge = bearer_challenge(answer(401, HUB))
    assert challenge == {"realm": "https://auth.docker.io/token", "service": "registry.docker.io",
                         "scope": "repository:library/busybox:pull"}
    request = token_request(challenge)
    assert request.url.host == "auth.docker.io" and request.url.path == "/token"
    assert dict(request.url.params) == {"service": "registry.docker.io", "scope": "repository:library/busybox:pull"}


@pytest.mark.parametrize("status, header", [
    (200, HUB),                                       # not a 401
    (401, None),                                      # no challenge
    (401, 'Basic realm="registry"'),                  # another scheme: answered as it is
    (401, 'Bearer service="x"'),                      # no realm
    (401, 'Bearer realm="file:///etc/passwd"'),       # a realm we would not fetch
])
def test_anything_but_a_usable_bearer_challenge_is_left_alone(status, header):
    assert bearer_challenge(answer(status, header)) is None


@pytest.mark.parametrize("document, key", [({"token": "t1"}, "token"), ({"access_token": "t2"}, "access_token")])
def test_either_token_field_is_taken(document, key):
    assert token_from(httpx.Response(200, json=document), {"realm": "https://auth/token"}) == document[key]


@pytest.mark.parametrize("response, message", [
    (httpx.Response(403, json={"error": "denied"}), "refused an anonymous token: HTTP 403"),
    (httpx.Response(200, content=b"not json"), "answered without a token"),
    (httpx.Response(200, json=["token"]), "answered without a token"),
    (httpx.Response(200, json={"token": ""}), "answered without a token"),
    (httpx.Response(200, json={"token": 7}), "answered without a token"),
])
def test_a_bad_token_answer_names_the_realm_and_scope(response, message):
    with pytest.raises(UnavailableError, match=message) as raised:
        token_from(response, {"realm": "https://auth/token", "scope": "repository:r:pull"})
    assert "https://auth/token (scope repository:r:pull)" in str(raised.value)
