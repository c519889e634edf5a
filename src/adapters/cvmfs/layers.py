"""Where a layer lives in the unpacked.cern.ch layout, and whether it can be served.

Layout: `<base>/.layers/<hex[0:2]>/<hex>/layerfs`, `<hex>` taken from the layer's
compressed digest. The base is a CVMFS mountpoint or any directory in that layout
(NFS, a local disk); nothing here writes to it.

Whiteouts: overlayfs only honours its own (char device 0/0, `trusted.overlay.opaque`).
The publisher writes those and drops `PUBLISHED_MARKER` beside `layerfs`: served at once.
A layer without the marker ("foreign") may hold `.wh.` files that overlayfs would show as
plain files, and finding out needs a walk of the whole layer, which Prepare must never do.
So `foreign` says what to do with them:

- "scan" (with a scanner): the first Prepare falls back (containerd downloads the layer)
  and queues a background scan that builds whiteout shadows (`whiteouts.py`); once the
  result exists, the layer is served with them, deletions applied.
- "serve": served at once without shadows (deleted files reappear, `.wh.` files show).
- "download": never served remotely.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from snapmux.adapters.cvmfs.scanner import WhiteoutScanner
from snapmux.adapters.cvmfs.whiteouts import Shadows
from snapmux.domain.errors import InvalidArgumentError
from snapmux.domain.labels import CRI_DIGEST_LABEL, STARGZ_DIGEST_LABEL

log = logging.getLogger(__name__)

DIGEST_LABELS = (CRI_DIGEST_LABEL, STARGZ_DIGEST_LABEL)
PUBLISHED_MARKER = "snapmux-layer.json"
"""Written by the publisher: the layer's whiteouts are overlayfs-native."""

FOREIGN_MODES = ("scan", "serve", "download")

_DIGEST = re.compile(r"sha256:([0-9a-f]{64})")


def parse_digest(value: str) -> str:
    """The 64 hex digits of a `sha256:` digest; anything else could become a path, so refuse it."""
    found = _DIGEST.fullmatch(value) if isinstance(value, str) else None
    if not found:
        raise InvalidArgumentError(f"layer digest {str(value)[:100]!r} is not sha256:<64 lowercase hex>")
    return found.group(1)


def digest_from_labels(labels: Mapping[str, str] | None) -> str | None:
    """The layer's digest hex from the CRI label or the stargz (ctr-remote) label, if any."""
    labels = labels or {}
    found = [parse_digest(labels[name]) for name in DIGEST_LABELS if name in labels]
    if len(set(found)) > 1:
        raise InvalidArgumentError(f"labels {', '.join(DIGEST_LABELS)} name different layers")
    return found[0] if found else None


@dataclass(frozen=True)
class LayerCheck:
    """What one look at a layer's directory found."""

    path: str
    exists: bool
    published: bool
    shadows: Shadows | None = None
    """For a foreign layer: its complete scan result, if any (looked up with the check)."""


@dataclass(frozen=True)
class Servable:
    """A layer to adopt: its layerfs and, for a scanned foreign layer with whiteouts, the shadows dir."""

    path: str
    shadows: str = ""


class CvmfsLayerStore:
    """Maps digests to layer directories under one base; all filesystem looks run off the loop."""

    def __init__(self, base: str, foreign: str = "download", scanner: WhiteoutScanner | None = None) -> None:
        if foreign not in FOREIGN_MODES:
            raise ValueError(f"foreign layers: {foreign!r} is not one of {', '.join(FOREIGN_MODES)}")
        self.base = os.path.abspath(base)
        self.foreign = foreign if (foreign != "scan" or scanner is not None) else "download"
        self.scanner = scanner
        self.usable = not any(char in self.base for char in ":,\x00")
        if not self.usable:
            log.warning("layers under %r cannot be overlay lowerdirs (':' or ','): every layer is unpacked locally",
                        self.base)

    def layer_dir(self, hex_digest: str) -> str:
        parse_digest(f"sha256:{hex_digest}")
        return os.path.join(self.base, ".layers", hex_digest[:2], hex_digest)

    def layer_path(self, hex_digest: str) -> str:
        return os.path.join(self.layer_dir(hex_digest), "layerfs")

    def check_now(self, hex_digest: str) -> LayerCheck:
        """Blocking: two stats, plus (foreign, scanning) one read and two stats, whatever the layer's size."""
        path = self.layer_path(hex_digest)
        exists = os.path.isdir(path)
        published = exists and os.path.isfile(os.path.join(self.layer_dir(hex_digest), PUBLISHED_MARKER))
        shadows = None
        if exists and not published and self.foreign == "scan" and self.scanner is not None:
            shadows = self.scanner.lookup(hex_digest)
        return LayerCheck(path, exists, published, shadows)

    async def check(self, hex_digest: str) -> LayerCheck:
        return await asyncio.to_thread(self.check_now, hex_digest)

    async def servable(self, hex_digest: str) -> Servable | None:
        """What to adopt when this layer can be served remotely, else None (fall back).

        An unscanned foreign layer queues its scan here (deduplicated), so a later Prepare serves it."""
        if not self.usable:
            return None
        found = await self.check(hex_digest)
        if not found.exists:
            return None
        if found.published or self.foreign == "serve":
            return Servable(found.path)
        if found.shadows is not None:
            return Servable(found.path, "" if found.shadows.clean else found.shadows.path)
        if self.foreign == "scan" and self.scanner is not None:
            self.scanner.queue(hex_digest, found.path)
        return None

    async def reachable(self, path: str) -> bool:
        """Whether an adopted layer directory is still there (CVMFS may drop it, NFS may hang up)."""
        return await asyncio.to_thread(os.path.isdir, path)

    async def reclaim_shadows(self, in_use: set[str]) -> list[str]:
        """Whiteout shadows of layers gone from the layout and used by no snapshot (`in_use`:
        digests hex); a layer being scanned right now is left alone."""
        if self.scanner is None:
            return []
        keep = in_use | set(self.scanner.scans)
        return await asyncio.to_thread(
            self.scanner.cache.reclaim, keep, lambda hex_digest: os.path.isdir(self.layer_path(hex_digest))
        )
