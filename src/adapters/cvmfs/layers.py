"""Where a layer lives in the unpacked.cern.ch layout, and whether it can be served.

Layout: `<base>/.layers/<hex[0:2]>/<hex>/layerfs`, `<hex>` taken from the layer's
compressed digest, and DUCC's flattened chains `<base>/.chains/<xx>/<id>` (`chains.py`).
The base is a CVMFS mountpoint or any directory in that layout (NFS, a local disk);
nothing here writes to it.

Whiteouts: overlayfs only honours its own (char device 0/0, `trusted.overlay.opaque`).
The publisher writes those and drops `PUBLISHED_MARKER` beside `layerfs`: served at once.
A layer without the marker ("foreign", as DUCC writes every layer) may hold `.wh.` files
that overlayfs would show as plain files, and finding out needs a walk of the whole layer.
So `foreign` says what to do with them:

- "scan" (with a scanner): served from DUCC's chain when it exists (deletions applied, no
  scan); else the first Prepare scans the layer off the loop within `scan_budget` seconds
  and serves it with whiteout shadows (`whiteouts.py`) if the scan finished; a scan over
  budget keeps running in the background and the layer is downloaded this once.
- "serve": served at once without shadows (deleted files reappear, `.wh.` files show).
- "download": never served remotely.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from snapmux.adapters.cvmfs.chains import following_chain_ids, usable_chain
from snapmux.adapters.cvmfs.digests import digest_or_none, parse_digest
from snapmux.adapters.cvmfs.scanner import WhiteoutScanner
from snapmux.adapters.cvmfs.whiteout_names import PUBLISHED_MARKER
from snapmux.adapters.cvmfs.whiteouts import Shadows
from snapmux.domain.errors import InvalidArgumentError
from snapmux.domain.labels import (
    CRI_DIGEST_LABEL,
    CRI_IMAGE_LAYERS_LABEL,
    STARGZ_DIGEST_LABEL,
    STARGZ_IMAGE_LAYERS_LABEL,
)

log = logging.getLogger(__name__)

DIGEST_LABELS = (CRI_DIGEST_LABEL, STARGZ_DIGEST_LABEL)
IMAGE_LAYERS_LABELS = (CRI_IMAGE_LAYERS_LABEL, STARGZ_IMAGE_LAYERS_LABEL)
"""Comma-separated digests of this layer and those above it (cut short to fit containerd's
4096-byte label limit): containerd's CRI plugin and ctr-remote rpull send them."""

FOREIGN_MODES = ("scan", "serve", "download")

def digest_from_labels(labels: Mapping[str, str] | None) -> str | None:
    """The layer's digest hex from the CRI label or the stargz (ctr-remote) label, if any."""
    labels = labels or {}
    found = [parse_digest(labels[name]) for name in DIGEST_LABELS if name in labels]
    if len(set(found)) > 1:
        raise InvalidArgumentError(f"labels {', '.join(DIGEST_LABELS)} name different layers")
    return found[0] if found else None


def image_layers_from_labels(labels: Mapping[str, str] | None) -> list[str]:
    """The digests hex the labels name as the image's layers; a hint, so bad entries are skipped."""
    found: list[str] = []
    for name in IMAGE_LAYERS_LABELS:
        for entry in (labels or {}).get(name, "").split(","):
            hex_digest = digest_or_none(entry.strip())
            if hex_digest and hex_digest not in found:
                found.append(hex_digest)
    return found


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
    flattened: bool = False
    """A DUCC chain: `path` holds the whole filesystem up to this layer, nothing below is mounted."""


@dataclass(frozen=True)
class Decision:
    """What to do with one Prepare's layer, and why (logged and counted by the snapshotter)."""

    servable: Servable | None
    outcome: str
    """published | chain | scanned (earlier) | scan-in-budget | scan-over-budget | scan-failed |
    foreign-served | foreign-download | missing | unusable-base (and, inside the store, "scan":
    queued, to be waited for)"""


REASONS = {
    "published": "available (published)",
    "chain": "served from DUCC's flattened chain (deletions applied, one lower directory)",
    "scanned": "foreign layer served in place with the whiteout shadows of an earlier scan",
    "scan-in-budget": "foreign layer scanned within the budget, served in place with its deletions",
    "scan-over-budget": "foreign layer scan ran over the budget: downloaded this once, the scan goes on",
    "scan-failed": "foreign layer scan failed: downloaded (a later Prepare scans again)",
    "foreign-served": "foreign layer served as stored (foreign-layers = serve: deletions NOT applied)",
    "foreign-download": "foreign (foreign-layers = download)",
    "missing": "missing from {base}",
    "unusable-base": "unavailable (the layout under {base} cannot be overlay lowerdirs)",
}
"""Each Decision outcome as the logs say it."""

FOREIGN_OUTCOMES = frozenset({"chain", "scanned", "scan-in-budget", "scan-over-budget", "scan-failed", "foreign-served"})
"""The outcomes of a foreign layer's Prepare: logged at info and counted by the snapshotter."""


class CvmfsLayerStore:
    """Maps digests to layer directories under one base; all filesystem looks run off the loop."""

    def __init__(
        self, base: str, foreign: str = "download", scanner: WhiteoutScanner | None = None, scan_budget: float = 0.0
    ) -> None:
        if foreign not in FOREIGN_MODES:
            raise ValueError(f"foreign layers: {foreign!r} is not one of {', '.join(FOREIGN_MODES)}")
        self.base = os.path.abspath(base)
        self.foreign = foreign if (foreign != "scan" or scanner is not None) else "download"
        self.scanner = scanner
        self.scan_budget = scan_budget
        self._looked_ahead: set[str] = set()
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

    async def servable(self, hex_digest: str, chain_id: str = "", ahead: Sequence[str] = ()) -> Servable | None:
        return (await self.decide(hex_digest, chain_id, ahead)).servable

    async def decide(self, hex_digest: str, chain_id: str = "", ahead: Sequence[str] = ()) -> Decision:
        """What to adopt for this layer, or None (fall back to a download), and why; the why also in
        the debug log, the first question when a layer was unexpectedly downloaded."""
        decision = await self._decide(hex_digest, chain_id, ahead)
        if log.isEnabledFor(logging.DEBUG):
            why = REASONS[decision.outcome].format(base=self.base)
            served = decision.servable is not None
            log.debug("layer %s %s: %s", hex_digest, "served in place" if served else "unpacked locally", why,
                      extra={"layer": hex_digest, "in_place": served, "reason": why})
        return decision

    async def _decide(self, hex_digest: str, chain_id: str, ahead: Sequence[str]) -> Decision:
        """The decision itself.

        `chain_id`: DUCC's id of the image prefix ending here ("" if unknown). `ahead`: the
        image's other layers (digests hex), whose scans are queued now for the Prepares to come,
        after this layer's own."""
        if not self.usable:
            return Decision(None, "unusable-base")
        decision = await self._look(hex_digest, chain_id)
        if self.foreign == "scan" and self.scanner is not None and ahead:
            await self._scan_ahead(hex_digest, chain_id, ahead)
        if decision.outcome != "scan":
            return decision
        assert decision.servable is not None
        return await self._scan_now(hex_digest, decision.servable.path)

    async def _look(self, hex_digest: str, chain_id: str) -> Decision:
        """The decision a look can make; outcome "scan" (its scan queued) means wait for the scan."""
        if self.foreign != "download" and chain_id:  # a chain holds everything: it needs no layer dir
            chain = await asyncio.to_thread(usable_chain, self.base, chain_id)
            if chain is not None:
                return Decision(Servable(chain, flattened=True), "chain")
        found = await self.check(hex_digest)
        if not found.exists:
            return Decision(None, "missing")
        if found.published:
            return Decision(Servable(found.path), "published")
        if self.foreign == "serve":
            return Decision(Servable(found.path), "foreign-served")
        if found.shadows is not None:
            return Decision(self._with(found.path, found.shadows), "scanned")
        if self.foreign != "scan" or self.scanner is None:
            return Decision(None, "foreign-download")
        self.scanner.queue(hex_digest, found.path)  # first in the scanners' queue, before those ahead
        return Decision(Servable(found.path), "scan")

    async def _scan_now(self, hex_digest: str, path: str) -> Decision:
        assert self.scanner is not None
        finished, shadows = await self.scanner.within(hex_digest, path, self.scan_budget)
        if shadows is not None:
            return Decision(self._with(path, shadows), "scan-in-budget")
        return Decision(None, "scan-failed" if finished else "scan-over-budget")

    @staticmethod
    def _with(path: str, shadows: Shadows) -> Servable:
        return Servable(path, "" if shadows.clean else shadows.path)

    async def _scan_ahead(self, hex_digest: str, chain_id: str, ahead: Sequence[str]) -> None:
        """Queues the scans of the listed layers not looked at yet (deduplicated, bounded by the
        scanner's threads); one thread call checks them all. The labels list this layer and
        those above it in order, so with this layer's chain id the others' follow, and a layer
        DUCC's chain serves needs no scan."""
        chains = dict(zip(ahead, following_chain_ids(chain_id, ahead))) if ahead[0] == hex_digest else {}
        new = [h for h in ahead if h not in self._looked_ahead]
        if not new:
            return
        self._looked_ahead.update(new)
        checks = await asyncio.to_thread(lambda: [(h, self._needs_scan(h, chains.get(h, ""))) for h in new])
        for hex_digest, path in checks:
            if path is not None and self.scanner is not None:
                self.scanner.queue(hex_digest, path)

    def _needs_scan(self, hex_digest: str, chain_id: str) -> str | None:
        """Blocking: the layerfs of a foreign layer with no scan result and no chain, else None."""
        found = self.check_now(hex_digest)
        if not found.exists or found.published or found.shadows is not None:
            return None
        if chain_id and usable_chain(self.base, chain_id) is not None:
            return None
        return found.path

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
