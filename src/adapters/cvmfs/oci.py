"""Where the publisher reads an image from: an OCI layout dir, an OCI archive, a registry.

Each source gives the platform's manifest (an index is resolved to this machine's
platform) and opens blobs by digest. Registry blobs are spooled to a file beside the
layout first, so their digest is known good before anything is extracted from them.

Sources are untrusted (a registry, a layout someone handed over): every digest is checked
to be `sha256:<64 hex>` before it names a file or URL, indexes, manifests and configs are
JSON objects of at most MAX_DOCUMENT bytes with well-formed descriptors, and no blob may
yield more bytes than its descriptor's size (a registry or a layout blob that never ends -
a FIFO, /dev/zero - is cut off there rather than read forever).
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

from snapmux.adapters.cvmfs.layer_entries import BoundedTarInfo
from snapmux.adapters.cvmfs.layers import parse_digest
from snapmux.adapters.cvmfs.oci_documents import (
    MAX_DOCUMENT,
    BoundedBlob,
    checked_manifest,
    descriptor_of,
    document_of,
    index_entries,
    read_bounded,
    read_document,
    verified,
)
from snapmux.adapters.cvmfs.registry_auth import RegistryAuth, credentials_for
from snapmux.domain.errors import InvalidArgumentError, NotFoundError

INDEX_TYPES = {"application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json"}
MANIFEST_TYPES = {"application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json"}
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x"}
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_HOST = re.compile(rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{{1,5}})?")
_NAME = re.compile(  # distribution's reference grammar: no "..", userinfo or query can reach a URL
    rf"(?P<repo>{_COMPONENT}(?:/{_COMPONENT})*)"
    r"(?::(?P<tag>\w[\w.-]{0,127}))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?", re.ASCII)
DOCKER_HUB = "docker.io"
DOCKER_HUB_ALIASES = {DOCKER_HUB, "index.docker.io"}
DOCKER_HUB_REGISTRY = "registry-1.docker.io"
"""Where containerd and docker actually talk to for `docker.io` names."""


@dataclass(frozen=True)
class Reference:
    host: str
    """The registry to connect to (`docker.io` names: DOCKER_HUB_REGISTRY)."""
    repo: str
    ref: str
    """The digest if given, else the tag, else `latest`."""


def parse_reference(reference: str) -> Reference:
    """As docker and containerd normalise names (distribution's ParseNormalizedNamed): the first
    component is a host only if it has a `.` or `:`, is `localhost` or is not lowercase; else the
    name is on docker.io, where a one-component name is under `library/`."""
    first, slash, rest = reference.partition("/")
    if slash and (any(c in first for c in ".:") or first == "localhost" or first != first.lower()):
        host, name = first, rest
    else:
        host, name = DOCKER_HUB, reference
    if host in DOCKER_HUB_ALIASES:
        host, name = DOCKER_HUB_REGISTRY, name if "/" in name else f"library/{name}"
    found = _NAME.fullmatch(name)
    if not found or not _HOST.fullmatch(host):
        raise InvalidArgumentError(f"image reference {reference!r} is not [host[:port]/]repository[:tag][@digest]")
    return Reference(host, found["repo"], found["digest"] or found["tag"] or "latest")


@dataclass(frozen=True)
class Image:
    manifest_digest: str
    manifest: bytes
    config: bytes

    @property
    def layers(self) -> list[str]:
        return [layer["digest"] for layer in json.loads(self.manifest)["layers"]]


class ImageSource:
    """Template: subclasses open raw blobs (`_open`) and give the top-level descriptor."""

    def __init__(self) -> None:
        self.sizes: dict[str, int] = {}
        """Each blob's size as its descriptor gives it, learnt while resolving the image."""

    platform: str | None = None
    """`os/arch[/variant]` to pick from an index; None: this machine's."""

    def top_descriptor(self) -> dict: ...

    def _open(self, digest: str) -> contextlib.AbstractContextManager[IO[bytes]]: ...

    @contextlib.contextmanager
    def open_blob(self, digest: str) -> Iterator[IO[bytes]]:
        """The blob, cut off past its descriptor's size (unknown: MAX_DOCUMENT)."""
        with self._open(digest) as raw:
            yield BoundedBlob(raw, digest, self.sizes.get(digest, MAX_DOCUMENT))  # type: ignore[misc]

    def read(self, digest: str) -> bytes:
        with self.open_blob(digest) as blob:
            data = read_bounded(blob, f"document {digest}")
        return verified(digest, data)

    def read_manifest(self, digest: str) -> bytes:
        return self.read(digest)

    def image(self) -> Image:
        """The manifest for this machine's platform, resolving (nested) indexes."""
        descriptor = descriptor_of(self.top_descriptor(), "top-level descriptor", sized=False)
        for _ in range(4):
            digest = self._learn(descriptor)
            manifest = self.read_manifest(digest)
            document = document_of(manifest, f"manifest {digest}")
            if "layers" in document:
                config = checked_manifest(document, digest)
                for layer in document["layers"]:
                    self._learn(layer)
                return Image(digest, manifest, self.read(self._learn(config)))
            descriptor = descriptor_of(_platform_manifest(document, self.platform), f"index {digest} entry")
        raise InvalidArgumentError(f"image index nesting too deep at {descriptor['digest']}")

    def _learn(self, descriptor: dict) -> str:
        if "size" in descriptor:
            self.sizes[descriptor["digest"]] = descriptor["size"]
        return descriptor["digest"]


def host_platform() -> str:
    return f"linux/{_ARCH.get(platform.machine(), platform.machine())}"


def _platform_manifest(index: dict, wanted_platform: str | None = None) -> dict:
    os_name, arch, variant = ((wanted_platform or host_platform()).split("/") + [""])[:3]
    for entry in index_entries(index, "image index"):
        wanted = entry.get("platform", {})
        if not isinstance(wanted, dict):
            continue
        if wanted.get("os", "linux") == os_name and wanted.get("architecture", arch) == arch \
                and (not variant or wanted.get("variant", variant) == variant):
            return entry
    raise NotFoundError(f"image index has no manifest for {wanted_platform or host_platform()}")


def _by_tag(index: dict, tag: str | None, where: str) -> dict:
    manifests = index_entries(index, where)
    if tag is None and len(manifests) == 1:
        return manifests[0]
    for entry in manifests:
        annotations = entry.get("annotations")
        if isinstance(annotations, dict) and annotations.get("org.opencontainers.image.ref.name") == tag:
            return entry
    raise NotFoundError(f"{where}: no image tagged {tag!r}")


class OciLayoutSource(ImageSource):
    def __init__(self, path: str, tag: str | None = None) -> None:
        super().__init__()
        self.path, self.tag = path, tag

    def top_descriptor(self) -> dict:
        with open(os.path.join(self.path, "index.json"), "rb") as index:
            return _by_tag(read_document(index, f"{self.path}/index.json"), self.tag, self.path)

    def _open(self, digest: str) -> contextlib.AbstractContextManager[IO[bytes]]:
        return open(os.path.join(self.path, "blobs", "sha256", parse_digest(digest)), "rb")


class OciArchiveSource(ImageSource):
    def __init__(self, path: str, tag: str | None = None) -> None:
        super().__init__()
        self.path, self.tag = path, tag

    @contextlib.contextmanager
    def _member(self, name: str) -> Iterator[IO[bytes]]:
        with tarfile.open(self.path, "r:", tarinfo=BoundedTarInfo) as archive:  # headers bounded, as in layers
            while (member := archive.next()) is not None:
                archive.members.clear()  # one lookup needs no list of every member
                if member.name.lstrip("./") == name and member.isreg():
                    break
            if member is None:
                raise NotFoundError(f"{self.path}: no {name}")
            stream = archive.extractfile(member)
            assert stream is not None
            yield stream

    def top_descriptor(self) -> dict:
        with self._member("index.json") as index:
            return _by_tag(read_document(index, f"{self.path}: index.json"), self.tag, self.path)

    def _open(self, digest: str) -> contextlib.AbstractContextManager[IO[bytes]]:
        return self._member(f"blobs/sha256/{parse_digest(digest)}")


class RegistrySource(ImageSource):
    """Registry v2 HTTP API: anonymous, or with the host's entry in `authfile` (a containers/docker
    auth file); bearer tokens where the registry asks for them; `plain_http` for a loopback registry."""

    ACCEPT = ", ".join(sorted(INDEX_TYPES | MANIFEST_TYPES))

    def __init__(self, reference: str, spool_dir: str, plain_http: bool = False, authfile: str | None = None) -> None:
        super().__init__()
        parsed = parse_reference(reference)
        self.repo, self.ref, self.spool_dir = parsed.repo, parsed.ref, spool_dir
        scheme = "http" if plain_http else "https"
        self._manifests: dict[str, bytes] = {}
        self.client = httpx.Client(base_url=f"{scheme}://{parsed.host}/v2/", follow_redirects=True, timeout=60,
                                   auth=RegistryAuth(credentials_for(parsed.host, authfile)), verify=_tls())

    def top_descriptor(self) -> dict:
        return {"digest": self.ref if self.ref.startswith("sha256:") else self._manifest_digest(self.ref)}

    def _manifest_digest(self, tag: str) -> str:
        content = self._fetch(f"{self.repo}/manifests/{tag}", MAX_DOCUMENT)
        digest = f"sha256:{hashlib.sha256(content).hexdigest()}"
        self._manifests[digest] = content
        return digest

    def read_manifest(self, digest: str) -> bytes:
        path = f"{self.repo}/manifests/sha256:{parse_digest(digest)}"
        return verified(digest, self._manifests.get(digest) or self._fetch(path, MAX_DOCUMENT))

    def read(self, digest: str) -> bytes:
        return verified(digest, self._fetch(f"{self.repo}/blobs/sha256:{parse_digest(digest)}", MAX_DOCUMENT))

    def _fetch(self, path: str, limit: int) -> bytes:
        """A small document, read no further than `limit` whatever the registry sends."""
        chunks, total = [], 0
        with contextlib.closing(self._stream(path)) as stream:
            for chunk in stream:
                chunks.append(chunk)
                total += len(chunk)
                if total > limit:
                    raise InvalidArgumentError(f"registry: {path} is larger than {limit} bytes")
        return b"".join(chunks)

    def _stream(self, path: str) -> Iterator[bytes]:
        with self.client.stream("GET", path, headers={"Accept": self.ACCEPT}) as response:
            if response.status_code == 404:
                raise NotFoundError(f"registry: {path} not found")
            response.raise_for_status()
            yield from response.iter_bytes(1 << 20)

    @contextlib.contextmanager
    def _open(self, digest: str) -> Iterator[IO[bytes]]:
        """Spooled to disk, no further than the descriptor's size: a blob that never ends fills nothing."""
        limit = self.sizes.get(digest, MAX_DOCUMENT)
        os.makedirs(self.spool_dir, exist_ok=True)
        path = f"{self.repo}/blobs/sha256:{parse_digest(digest)}"
        with tempfile.TemporaryFile(dir=self.spool_dir) as spool:
            with contextlib.closing(self._stream(path)) as stream:
                for chunk in stream:
                    if spool.tell() + len(chunk) > limit:
                        raise InvalidArgumentError(f"registry: blob {digest} is larger than its descriptor says")
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
