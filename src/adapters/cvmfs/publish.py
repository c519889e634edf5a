"""Publish an image's layers into the unpacked.cern.ch layout, safely and idempotently.

Each layer is extracted into `.layers/<xx>/.tmp-<hex>-*` beside its final place, its
compressed digest checked while streaming, the marker written, the filesystem synced,
and only then renamed to `.layers/<xx>/<hex>`: a half-written layer never looks
available, and a crash leaves only a `.tmp-*` directory that the next run removes.
A layer already in place is skipped. The `publish` command (site_publish.SitePublisher) takes
a lock file per layer (locks.py), which works across NFS hosts; `session()` is the older
layout-wide flock of `publish_image`, for one image at a time on one host.

`.layers/<xx>/<hex>` stays 0700 (mkdtemp's mode): what a layer holds - set-id binaries,
world-writable directories - is reachable by root only (the snapshotter), never by a local
user on the publishing host, during extraction or after.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, ContextManager

from snapmux.adapters.cvmfs.ducc import remove_leftovers, scratch_prefix
from snapmux.adapters.cvmfs.layers import CvmfsLayerStore, parse_digest
from snapmux.adapters.cvmfs.layer_entries import LayerLimits
from snapmux.adapters.cvmfs.untar import extract_layer
from snapmux.adapters.cvmfs.whiteout_names import PUBLISHED_MARKER
from snapmux.adapters.durable import built_aside, write_atomically
from snapmux.domain.errors import InvalidArgumentError

log = logging.getLogger(__name__)

BlobOpener = Callable[[str], ContextManager[IO[bytes]]]
"""Opens a blob by digest (`sha256:<hex>`) for reading."""


@dataclass
class PublishReport:
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    leftovers_removed: int = 0


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
        self.layers_dir = os.path.join(self.store.base, ".layers")

    @contextlib.contextmanager
    def session(self) -> Iterator[PublishReport]:
        """Exclusive publishing; removes what interrupted runs left behind before writing anything."""
        os.makedirs(self.layers_dir, exist_ok=True)
        with open(os.path.join(self.layers_dir, ".publish.lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            report = PublishReport(leftovers_removed=self._remove_leftovers())
            yield report

    def _remove_leftovers(self) -> int:
        return sum(remove_leftovers(folder) for folder in glob.glob(os.path.join(glob.escape(self.layers_dir), "*")))

    def publish_layer(self, digest: str, open_blob: BlobOpener, report: PublishReport) -> None:
        hex_digest = parse_digest(digest)
        final = self.store.layer_dir(hex_digest)
        if os.path.lexists(final):
            if not self.store.check_now(hex_digest).published:
                log.warning("%s exists but was not published by snapmux; leaving it alone", final)
            report.skipped.append(digest)
            return
        os.makedirs(os.path.dirname(final), exist_ok=True)
        with built_aside(final, scratch_prefix(hex_digest)) as scratch:
            self._extract_verified(digest, open_blob, scratch)
            _write_json(os.path.join(scratch, PUBLISHED_MARKER), {"digest": digest, "whiteouts": "overlay"})
        report.written.append(digest)

    def _extract_verified(self, digest: str, open_blob: BlobOpener, scratch: str) -> None:
        with open_blob(digest) as blob:
            reader = _HashingReader(blob)
            extract_layer(reader, os.path.join(scratch, "layerfs"), self.limits)  # type: ignore[arg-type]
            actual = reader.drain()
        if f"sha256:{actual}" != digest:
            raise InvalidArgumentError(f"layer blob {digest} has digest sha256:{actual}")

    def write_metadata(self, manifest_digest: str, manifest: bytes, config: bytes) -> str:
        """Keep the manifest and config next to the layers (`.images/<hex>/`), for whoever wants them."""
        folder = os.path.join(self.store.base, ".images", parse_digest(manifest_digest))
        os.makedirs(folder, exist_ok=True)
        for name, data in (("manifest.json", manifest), ("config.json", config)):
            write_atomically(os.path.join(folder, name), data)
        return folder


def _write_json(path: str, value: object) -> None:
    write_atomically(path, json.dumps(value, sort_keys=True).encode())
