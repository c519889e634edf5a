"""What an image's JSON documents and blobs must look like before the publisher uses them.

Indexes, manifests and configs come from untrusted sources: each must be a JSON object of at
most MAX_DOCUMENT bytes whose descriptors have a `sha256:<64 hex>` digest (checked before it
names a file or URL) and a non-negative integer size, and no blob may yield more bytes than
its descriptor's size.
"""

from __future__ import annotations

import hashlib
import json
from typing import IO

from snapmux.adapters.cvmfs.layers import parse_digest
from snapmux.adapters.overlay.lowers import OVERLAYFS_MAX_STACK
from snapmux.domain.errors import InvalidArgumentError

MAX_DOCUMENT = 4 << 20
"""Index, manifest or config: distribution refuses manifests above 4 MiB, so does this."""

_DOCKER_LAYER = "application/vnd.docker.image.rootfs"
_OCI_LAYER = "application/vnd.oci.image.layer"
LAYER_MEDIA_TYPES = frozenset({
    f"{_DOCKER_LAYER}.diff.tar", f"{_DOCKER_LAYER}.diff.tar.gzip",
    f"{_DOCKER_LAYER}.foreign.diff.tar", f"{_DOCKER_LAYER}.foreign.diff.tar.gzip",
    *(f"{_OCI_LAYER}.{kind}.tar{compression}"
      for kind in ("v1", "nondistributable.v1") for compression in ("", "+gzip", "+zstd")),
})
"""The layers containerd's unpacker applies (images.IsLayerType, then plain, gzip or zstd): an
encrypted, bzip2 or xz layer, or an artifact's blob, would publish a tree no pull could have made."""


class BoundedBlob:
    """A read-only stream that refuses to yield more than `size` bytes."""

    def __init__(self, inner: IO[bytes], digest: str, size: int) -> None:
        self._inner, self._digest, self._left = inner, digest, size

    def read(self, size: int = -1) -> bytes:
        data = self._inner.read(self._left + 1 if size < 0 or size > self._left else size)
        if len(data) > self._left:
            raise InvalidArgumentError(f"blob {self._digest} is larger than its descriptor says")
        self._left -= len(data)
        return data


def read_document(stream: IO[bytes], where: str) -> dict:
    return document_of(read_bounded(stream, where), where)


def read_bounded(stream: IO[bytes], where: str) -> bytes:
    """At most MAX_DOCUMENT bytes: a larger document is refused before it is parsed or hashed."""
    data = stream.read(MAX_DOCUMENT + 1)
    if len(data) > MAX_DOCUMENT:
        raise InvalidArgumentError(f"{where} is larger than {MAX_DOCUMENT} bytes")
    return data


def document_of(data: bytes, where: str) -> dict:
    try:
        document = json.loads(data)
    except ValueError as error:
        raise InvalidArgumentError(f"{where} is not JSON: {error}") from None
    if not isinstance(document, dict):
        raise InvalidArgumentError(f"{where} is not a JSON object")
    return document


def descriptor_of(value: object, where: str, sized: bool = True) -> dict:
    """A descriptor with a `sha256:<64 hex>` digest and (`sized`) a non-negative integer size."""
    if not isinstance(value, dict):
        raise InvalidArgumentError(f"{where} is not a descriptor object")
    parse_digest(value.get("digest"))
    size = value.get("size")
    if (sized or size is not None) and (type(size) is not int or size < 0):
        raise InvalidArgumentError(f"{where} ({value['digest']}) has no valid size")
    return value


def checked_manifest(document: dict, digest: str) -> dict:
    """Every layer a descriptor of a layer media type, and no more of them than containerd can
    unpack (each layer's chain, and the chains a publish flattens, grow with the depth); returns
    the config's."""
    layers = document.get("layers")
    if not isinstance(layers, list):
        raise InvalidArgumentError(f"manifest {digest}: layers is not a list")
    if len(layers) > OVERLAYFS_MAX_STACK:
        raise InvalidArgumentError(
            f"manifest {digest} has {len(layers)} layers; overlayfs stacks at most {OVERLAYFS_MAX_STACK},"
            " so containerd could not unpack it"
        )
    for index, layer in enumerate(layers):
        descriptor_of(layer, f"manifest {digest} layer {index}")
        media_type = layer.get("mediaType")
        if media_type not in LAYER_MEDIA_TYPES:
            raise InvalidArgumentError(
                f"manifest {digest} layer {index} ({layer['digest']}): media type {media_type!r} is not a layer"
                " containerd unpacks (a plain, gzip or zstd tar)"
            )
    return descriptor_of(document.get("config"), f"manifest {digest} config")


def verified(digest: str, data: bytes) -> bytes:
    if f"sha256:{hashlib.sha256(data).hexdigest()}" != digest:
        raise InvalidArgumentError(f"blob {digest} does not match its digest")
    return data


def index_entries(index: dict, where: str) -> list[dict]:
    manifests = index.get("manifests", [])
    if not isinstance(manifests, list) or not all(isinstance(entry, dict) for entry in manifests):
        raise InvalidArgumentError(f"{where}: manifests is not a list of descriptors")
    return manifests
