"""Parsing a registry's token challenge, its token answer and auth files: bad ones are named, never a crash."""

from __future__ import annotations

import base64
import json

import httpx
import pytest

from snapmux.adapters.cvmfs.registry_auth import (
    bearer_challenge,
    credentials_for,
    default_authfile,
    token_from,
    token_request,
)
from snapmux.domain.errors import InvalidArgumentError, UnavailableError

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
    (httpx.Response(403, json={"error": "denied"}), "refused a token: HTTP 403"),
    (httpx.Response(200, content=b"not json"), "answered without a token"),
    (httpx.Response(200, json=["token"]), "answered without a token"),
    (httpx.Response(200, json={"token": ""}), "answered without a token"),
    (httpx.Response(200, json={"token": 7}), "answered without a token"),
])
def test_a_bad_token_answer_names_the_realm_and_scope(response, message):
    with pytest.raises(UnavailableError, match=message) as raised:
        token_from(response, {"realm": "https://auth/token", "scope": "repository:r:pull"})
    assert "https://auth/token (scope repository:r:pull)" in str(raised.value)


def auth_file(tmp_path, auths) -> str:
    path = tmp_path / "auth.json"
    path.write_text(json.dumps({"auths": auths}))
    return str(path)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize("key", ["registry.example", "https://registry.example", "https://registry.example/v2/"])
def test_credentials_are_found_under_any_spelling_docker_writes(tmp_path, key):
    path = auth_file(tmp_path, {key: {"auth": b64("user:pa:ss")}, "other.example": {"auth": b64("x:y")}})
    assert credentials_for("registry.example", path) == ("user", "pa:ss")
    assert credentials_for("third.example", path) is None


def test_docker_hub_logins_serve_pulls_from_registry_1(tmp_path):
    path = auth_file(tmp_path, {"https://index.docker.io/v1/": {"auth": b64("hubuser:token")}})
    assert credentials_for("registry-1.docker.io", path) == ("hubuser", "token")


def test_no_auth_file_means_anonymous():
    assert credentials_for("registry.example", None) is None and credentials_for("registry.example", "") is None


@pytest.mark.parametrize("content", [
    "{not json",
    json.dumps({"auths": {"registry.example": {"auth": "%%% not base64"}}}),
    json.dumps({"auths": {"registry.example": {}}}),
    json.dumps({"auths": {"registry.example": {"auth": b64("no-colon")}}}),
    json.dumps({"auths": ["registry.example"]}),
])
def test_a_bad_auth_file_is_named_not_a_crash(tmp_path, content):
    path = tmp_path / "auth.json"
    path.write_text(content)
    with pytest.raises(InvalidArgumentError, match=f"auth file {path}"):
        credentials_for("registry.example", str(path))


def test_a_missing_auth_file_is_named(tmp_path):
    with pytest.raises(InvalidArgumentError, match="nope.json"):
        credentials_for("registry.example", str(tmp_path / "nope.json"))


def test_the_auth_file_defaults_to_registry_auth_file_then_docker_config(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    assert default_authfile() is None
    docker = tmp_path / ".docker" / "config.json"
    docker.parent.mkdir()
    docker.write_text("{}")
    assert default_authfile() == str(docker)
    monkeypatch.setenv("REGISTRY_AUTH_FILE", "/run/containers/0/auth.json")
    assert default_authfile() == "/run/containers/0/auth.json"
