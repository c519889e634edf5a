"""DUCC's wishlist ("recipe", version 1 YAML) and its tag wildcards.

    version: 1
    user: cvmfsunpacker                      # ignored: no CVMFS transaction here
    cvmfs_repo: unpacked.cern.ch             # ignored: the target is --target
    output_format: '$(scheme)://.../thin/$(image)'   # ignored: no thin images are written
    input:
      - 'https://registry.hub.docker.com/library/fedora:latest'
      - 'https://gitlab-registry.cern.ch/group/app:1.*'

An input's scheme says how to reach the registry (`http://` is plain http), Docker Hub's web
names map to its registry host, and a tag with `*` (the only wildcard DUCC knows, matched
like a shell glob) is expanded through the registry's tag list API (`/v2/<repo>/tags/list`,
following `Link: rel="next"` pages).
"""

from __future__ import annotations

import fnmatch
import logging
import re
from dataclasses import dataclass

import httpx
import yaml

from snapmux.domain.errors import InvalidArgumentError

log = logging.getLogger(__name__)

IGNORED_KEYS = ("user", "cvmfs_repo", "output_format")
_HUB_ALIASES = {"registry.hub.docker.com", "docker.io", "index.docker.io", "hub.docker.com"}
_TOLD: set[str] = set()
_NEXT = re.compile(r'<([^>]+)>\s*;\s*rel="?next"?')


@dataclass(frozen=True)
class Wanted:
    """One recipe input: `reference` as host/repo[:tag|@digest], `plain_http` from its scheme."""

    reference: str
    plain_http: bool = False

    @property
    def wildcard(self) -> bool:
        return "*" in self.tag

    @property
    def repository(self) -> str:
        """host/repo, without tag or digest."""
        name = self.reference.split("@", 1)[0]
        head, sep, tail = name.rpartition(":")
        return head if sep and "/" not in tail else name

    @property
    def tag(self) -> str:
        name = self.reference.split("@", 1)[0]
        return name[len(self.repository) + 1 :] if len(name) > len(self.repository) else ""


def parse_input(text: str, plain_http: bool = False) -> Wanted:
    """`[scheme://]host/repo[:tag][@digest]`; a bare Docker Hub name gets `library/`."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidArgumentError(f"recipe input {text!r} is not an image reference")
    text = text.strip()
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "", text
    elif scheme not in ("http", "https", "docker"):
        raise InvalidArgumentError(f"recipe input {text!r}: scheme {scheme!r} is not http, https or docker")
    host, slash, path = rest.partition("/")
    if not slash or not path:
        raise InvalidArgumentError(f"recipe input {text!r} is not host/repository[:tag]")
    if host in _HUB_ALIASES:
        host = "registry-1.docker.io"
        path = path if "/" in path.split(":", 1)[0] else f"library/{path}"
    return Wanted(f"{host}/{path}", plain_http or scheme == "http")


def load_recipe(path: str, plain_http: bool = False) -> list[Wanted]:
    """The recipe's inputs; a malformed recipe is an error naming the key, loading nothing."""
    try:
        with open(path, encoding="utf-8") as handle:
            document = yaml.safe_load(handle)
    except (OSError, yaml.YAMLError) as error:
        raise InvalidArgumentError(f"recipe {path}: {type(error).__name__}: {error}") from None
    if not isinstance(document, dict):
        raise InvalidArgumentError(f"recipe {path}: not a YAML mapping")
    if document.get("version") != 1:
        raise InvalidArgumentError(f"recipe {path}: key 'version' must be 1, not {document.get('version')!r}")
    inputs = document.get("input")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidArgumentError(f"recipe {path}: key 'input' must be a non-empty list of image references")
    ignored = [key for key in IGNORED_KEYS if key in document]
    if ignored and path not in _TOLD:
        _TOLD.add(path)  # --loop re-reads the recipe every pass: say it once
        log.warning("recipe %s: ignoring %s (no CVMFS transaction and no thin images here)", path, ", ".join(ignored))
    unknown = sorted(set(document) - {"version", "input", *IGNORED_KEYS})
    if unknown:
        log.warning("recipe %s: ignoring unknown key(s) %s", path, ", ".join(map(str, unknown)))
    return [parse_input(entry, plain_http) for entry in inputs]


def list_tags(client: httpx.Client, repo: str) -> list[str]:
    """Every tag of `repo`, across pages; the client is a RegistrySource's (auth included)."""
    tags: list[str] = []
    url: str | None = f"{repo}/tags/list?n=1000"
    for _ in range(1000):
        if url is None:
            return tags
        response = client.get(url)
        response.raise_for_status()
        try:
            found = response.json().get("tags") or []
        except (ValueError, AttributeError):
            raise InvalidArgumentError(f"registry: tag list of {repo} is not JSON") from None
        if not isinstance(found, list) or not all(isinstance(tag, str) for tag in found):
            raise InvalidArgumentError(f"registry: tag list of {repo} is not a list of strings")
        tags.extend(found)
        link = _NEXT.search(response.headers.get("link", ""))
        url = link.group(1).removeprefix("/v2/") if link else None
    raise InvalidArgumentError(f"registry: tag list of {repo} does not end")


def matching(tags: list[str], pattern: str) -> list[str]:
    return sorted(tag for tag in set(tags) if fnmatch.fnmatchcase(tag, pattern))
