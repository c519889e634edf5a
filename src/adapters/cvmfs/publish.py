"""Write one layer into the unpacked.cern.ch layout, safely and idempotently.

Each layer is extracted into `.layers/<xx>/.tmp-<hex>-*` beside its final place, its
compressed digest checked while streaming, the marker written, the filesystem synced,
and only then renamed to `.layers/<xx>/<hex>`: a half-written layer never looks
available, and a crash leaves only that `.tmp-<hex>-*` directory. A layer already in place
is skipped. The caller (site_publish.SitePublisher) holds the layer's lock file (locks.py,
which works across NFS hosts) and removes that layer's own leftovers first; nothing here
sweeps the folder, so another publisher's scratch of another layer beside it is never touched.

`.layers/<xx>/<hex>` stays 0700 (mkdtemp's mode): what a layer holds - set-id binaries,
world-writable directories - is reachable by root only (the snapshotter), never by a local
user on the publishing host, during extraction or after.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from typing import IO, ContextManager

from snapmux.adapters.cvmfs.ducc import scratch_prefix
from snapmux.adapters.cvmfs.layers import CvmfsLayerStore, parse_digest
from snapmux.adapters.cvmfs.layer_entries import LayerLimits
from snapmux.adapters.cvmfs.untar import extract_layer
from snapmux.adapters.cvmfs.whiteout_names import PUBLISHED_MARKER
from snapmux.adapters.durable import built_aside, write_atomically
from snapmux.domain.errors import InvalidArgumentError

log = logging.getLogger(__name__)

BlobOpener = Callable[[str], ContextManager[IO[bytes]]]
"""Opens a blob by digest (`sha256:<hex>`) for reading."""


class _HashingReader:
    """A read-only stream that hashes what passes through, so the digest check costs no second read."""

    def __init__(self, inner: IO[bytes]) -> None:
        self._inner = inner
        self.hash = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._inner.read(size)
        self.hash.update(data)
        return data

    def drain(self) -> str:
        while self.read(1 << 20):
            pass
        return self.hash.hexdigest()


class LayoutPublisher:
    def __init__(self, base: str, limits: LayerLimits | None = None) -> None:
        self.store = CvmfsLayerStore(base)
        self.limits = limits or LayerLimits()

    def publish_layer(self, digest: str, open_blob: BlobOpener) -> bool:
        """True when this call wrote the layer, False when it was already in place."""
        hex_digest = parse_digest(digest)
        final = self.store.layer_dir(hex_digest)
        if os.path.lexists(final):
            if not self.store.check_now(hex_digest).published:
                log.warning("%s exists but was not published by snapmux; leaving it alone", final)
            return False
        os.makedirs(os.path.dirname(final), exist_ok=True)
        with built_aside(final, scratch_prefix(hex_digest)) as scratch:
            self._extract_verified(digest, open_blob, scratch)
            _write_json(os.path.join(scratch, PUBLISHED_MARKER), {"digest": digest, "whiteouts": "overlay"})
        return True

    def _extract_verified(self, digest: str, open_blob: BlobOpener, scratch: str) -> None:
        with open_blob(digest) as blob:
            reader = _HashingReader(blob)
            extract_layer(reader, os.path.join(scratch, "layerfs"), self.limits)  # type: ignore[arg-type]
            actual = reader.drain()
        if f"sha256:{actual}" != digest:
            raise InvalidArgumentError(f"layer blob {digest} has digest sha256:{actual}")


def _write_json(path: str, value: object) -> None:
    write_atomically(path, json.dumps(value, sort_keys=True).encode())
