"""Where the publisher reads an image from: an OCI layout dir, an OCI archive, a registry.

Each source gives the platform's manifest (an index is resolved to this machine's
platform) and opens blobs by digest. Registry blobs are spooled to a file beside the
layout first, so their digest is known good before anything is extracted from them.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import platform
import re
import ssl
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

import httpx

from snapmux.adapters.cvmfs.layers import parse_digest
from snapmux.adapters.cvmfs.registry_auth import RegistryAuth, credentials_for
from snapmux.domain.errors import InvalidArgumentError, NotFoundError

INDEX_TYPES = {"application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json"}
MANIFEST_TYPES = {"application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json"}
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x"}
_REF = re.compile(r"^(?P<host>[^/]+)/(?P<repo>[a-z0-9._/-]+?)(?::(?P<tag>[\w.-]{1,128}))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?$")


@dataclass(frozen=True)
class Image:
    manifest_digest: str
    manifest: bytes
    config: bytes

    @property
    def layers(self) -> list[str]:
        return [layer["digest"] for layer in json.loads(self.manifest)["layers"]]


class ImageSource:
    """Template: subclasses read raw blobs and the top-level descriptor."""

    platform: str | None = None
    """`os/arch[/variant]` to pick from an index; None: this machine's."""

    def top_descriptor(self) -> dict: ...

    def read(self, digest: str) -> bytes:
        with self.open_blob(digest) as blob:
            return _verified(digest, blob.read())

    def open_blob(self, digest: str) -> contextlib.AbstractContextManager[IO[bytes]]: ...

    def read_manifest(self, digest: str) -> bytes:
        return self.read(digest)

    def image(self) -> Image:
        """The manifest for this machine's platform, resolving (nested) indexes."""
        digest = self.top_descriptor()["digest"]
        for _ in range(4):
            manifest = self.read_manifest(digest)
            document = json.loads(manifest)
            if "layers" in document:
                return Image(digest, manifest, self.read(document["config"]["digest"]))
            digest = _platform_manifest(document, self.platform)["digest"]
        raise InvalidArgumentError(f"image index nesting too deep at {digest}")


def _verified(digest: str, data: bytes) -> bytes:
    if f"sha256:{hashlib.sha256(data).hexdigest()}" != digest:
        raise InvalidArgumentError(f"blob {digest} does not match its digest")
    return data


def host_platform() -> str:
    return f"linux/{_ARCH.get(platform.machine(), platform.machine())}"


def _platform_manifest(index: dict, wanted_platform: str | None = None) -> dict:
    os_name, arch, variant = ((wanted_platform or host_platform()).split("/") + [""])[:3]
    for entry in index.get("manifests", []):
        wanted = entry.get("platform", {})
        if wanted.get("os", "linux") == os_name and wanted.get("architecture", arch) == arch \
                and (not variant or wanted.get("variant", variant) == variant):
            return entry
    raise NotFoundError(f"image index has no manifest for {wanted_platform or host_platform()}")


def _by_tag(index: dict, tag: str | None, where: str) -> dict:
    manifests = index.get("manifests", [])
    if tag is None and len(manifests) == 1:
        return manifests[0]
    for entry in manifests:
        if entry.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
            return entry
    raise NotFoundError(f"{where}: no image tagged {tag!r}")


class OciLayoutSource(ImageSource):
    def __init__(self, path: str, tag: str | None = None) -> None:
        self.path, self.tag = path, tag

    def top_descriptor(self) -> dict:
        with open(os.path.join(self.path, "index.json"), "rb") as index:
            return _by_tag(json.load(index), self.tag, self.path)

    def open_blob(self, digest: str) -> contextlib.AbstractContextManager[IO[bytes]]:
        return open(os.path.join(self.path, "blobs", "sha256", parse_digest(digest)), "rb")


class OciArchiveSource(ImageSource):
    def __init__(self, path: str, tag: str | None = None) -> None:
        self.path, self.tag = path, tag

    @contextlib.contextmanager
    def _member(self, name: str) -> Iterator[IO[bytes]]:
        with tarfile.open(self.path, "r:") as archive:
            member = next((m for m in archive if m.name.lstrip("./") == name and m.isreg()), None)
            if member is None:
                raise NotFoundError(f"{self.path}: no {name}")
            stream = archive.extractfile(member)
            assert stream is not None
            yield stream

    def top_descriptor(self) -> dict:
        with self._member("index.json") as index:
            return _by_tag(json.load(index), self.tag, self.path)

    def open_blob(self, digest: str) -> contextlib.AbstractContextManager[IO[bytes]]:
        return self._member(f"blobs/sha256/{parse_digest(digest)}")


class RegistrySource(ImageSource):
    """Registry v2 HTTP API: anonymous, or with the host's entry in `authfile` (a containers/docker
    auth file); bearer tokens where the registry asks for them; `plain_http` for a loopback registry."""

    ACCEPT = ", ".join(sorted(INDEX_TYPES | MANIFEST_TYPES))

    def __init__(self, reference: str, spool_dir: str, plain_http: bool = False, authfile: str | None = None) -> None:
        found = _REF.match(reference)
        if not found:
            raise InvalidArgumentError(f"image reference {reference!r} is not host/repository[:tag][@digest]")
        self.repo, self.spool_dir = found["repo"], spool_dir
        self.ref = found["digest"] or found["tag"] or "latest"
        scheme = "http" if plain_http else "https"
        self._manifests: dict[str, bytes] = {}
        self.client = httpx.Client(base_url=f"{scheme}://{found['host']}/v2/", follow_redirects=True, timeout=60,
                                   auth=RegistryAuth(credentials_for(found["host"], authfile)), verify=_tls())

    def top_descriptor(self) -> dict:
        return {"digest": self.ref if self.ref.startswith("sha256:") else self._manifest_digest(self.ref)}

    def _manifest_digest(self, tag: str) -> str:
        content = self._get(f"{self.repo}/manifests/{tag}").content
        digest = f"sha256:{hashlib.sha256(content).hexdigest()}"
        self._manifests[digest] = content
        return digest

    def read_manifest(self, digest: str) -> bytes:
        data = self._manifests.get(digest) or self._get(f"{self.repo}/manifests/sha256:{parse_digest(digest)}").content
        return _verified(digest, data)

    def read(self, digest: str) -> bytes:
        return _verified(digest, self._get(f"{self.repo}/blobs/sha256:{parse_digest(digest)}").content)

    def _get(self, path: str) -> httpx.Response:
        response = self.client.get(path, headers={"Accept": self.ACCEPT})
        if response.status_code == 404:
            raise NotFoundError(f"registry: {path} not found")
        response.raise_for_status()
        return response

    @contextlib.contextmanager
    def open_blob(self, digest: str) -> Iterator[IO[bytes]]:
        os.makedirs(self.spool_dir, exist_ok=True)
        with tempfile.TemporaryFile(dir=self.spool_dir) as spool:
            with self.client.stream("GET", f"{self.repo}/blobs/sha256:{parse_digest(digest)}") as response:
                if response.status_code == 404:
                    raise NotFoundError(f"registry: blob {digest} not found")
                response.raise_for_status()
                for chunk in response.iter_bytes(1 << 20):
                    spool.write(chunk)
            spool.seek(0)
            yield spool


@functools.cache
def _tls() -> ssl.SSLContext:
    """httpx's own default (certifi, SSL_CERT_FILE/DIR), loaded once per process (~0.1 s each),
    not once per image of a recipe."""
    return httpx.create_ssl_context()


def open_source(spec: str, spool_dir: str, plain_http: bool = False, authfile: str | None = None) -> ImageSource:
    """`oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]`, or a registry reference (`docker://` optional)."""
    for prefix, cls in (("oci:", OciLayoutSource), ("oci-archive:", OciArchiveSource)):
        if spec.startswith(prefix):
            path, _, tag = spec[len(prefix) :].partition(":")
            return cls(path, tag or None)
    return RegistrySource(spec.removeprefix("docker://"), spool_dir, plain_http, authfile)
