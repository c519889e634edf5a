"""CvmfsSnapshotter: serve layers already unpacked in a CVMFS-style layout, download the rest.

A decorator over the local overlay snapshotter. containerd's unpacker prepares each
layer with `containerd.io/snapshot.ref=<chainID>`; when that layer's directory is in the
layout we adopt it as a committed snapshot and answer AlreadyExists, which containerd reads
as "already unpacked" (it then finds it by List on the ref label and the parent, and records
the match's name as the layer's backend key). Otherwise the call goes through unchanged and
containerd downloads the layer, so one missing layer never stops the layers above it from
being served remotely. A foreign layer (see `layers.py`) is adopted from DUCC's flattened chain
when the layout has it (the whole image below in one directory), else scanned for whiteouts
within a budget and adopted with its shadow trees, which the local snapshotter mounts around it.
The chain id needs the digests of the layers below: they are read from the parents' labels
(adopted layers keep the Prepare's labels; commit carries the digest label over for the
layers containerd unpacks itself).

The adopted name keeps the Prepare key's `<namespace>/<id>/` prefix when it has containerd's
backend shape: every later call on that layer (Stat, Remove by GC, children's parent) then
carries its namespace, which the demux routes by. Namespaces can still end up sharing one
adopted layer: containerd answers a later AlreadyExists with the first committed snapshot that
has the same ref label and parent, from whichever namespace committed it; GC removes a snapshot
only once no namespace's image references it. Any other key adopts plain `<chainID>`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from snapmux.adapters.cvmfs.chains import next_chain_id
from snapmux.adapters.cvmfs.layers import (
    DIGEST_LABELS,
    FOREIGN_OUTCOMES,
    REASONS,
    CvmfsLayerStore,
    Decision,
    Servable,
    digest_from_labels,
    image_layers_from_labels,
)
from snapmux.domain import metrics as m
from snapmux.domain.errors import (
    AlreadyExistsError,
    DomainError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
)
from snapmux.domain.labels import CHAIN_LABEL, REF_LABEL, REMOTE_LABEL
from snapmux.domain.model import Info, Mount, Usage
from snapmux.domain.namespaces import validate_namespace
from snapmux.domain.ports import SnapshotService

log = logging.getLogger(__name__)

CHAIN_MEMO_SIZE = 100_000

SERVED_KEPT = 1024
"""Mounts kept as served (`_served_on_loop`): the snapshots being mounted at once, with room to spare."""


class AdoptingSnapshotService(SnapshotService, Protocol):
    """The local snapshotter, plus adopting an existing read-only directory as a committed snapshot."""

    async def adopt(
        self, name: str, parent: str, labels: Mapping[str, str], source: str, shadows: str = "",
        flattened: bool = False,
    ) -> Info: ...


@dataclass(frozen=True)
class RestoreReport:
    available: int = 0
    unavailable: tuple[str, ...] = ()


class CvmfsSnapshotter:
    def __init__(
        self,
        inner: AdoptingSnapshotService,
        store: CvmfsLayerStore,
        metrics: m.MetricsRegistry | None = None,
    ) -> None:
        self._inner = inner
        self._store = store
        self._metrics = metrics
        self._chains: dict[str, str | None] = {}
        self._kept: dict[int, tuple[Mount, Mount]] = {}

    async def prepare(self, key: str, parent: str = "", labels: Mapping[str, str] | None = None) -> list[Mount]:
        target = (labels or {}).get(REF_LABEL, "")
        hex_digest = digest_from_labels(labels)
        if target and hex_digest:
            chain_id = await self._chain_id(parent, hex_digest)
            decision = await self._store.decide(hex_digest, chain_id, image_layers_from_labels(labels))
            self._report(hex_digest, decision)
            if decision.servable is not None:
                await self._adopt(adopted_name(key, target), parent, dict(labels or {}), decision.servable)
        return await self._lowers_deduplicated(await self._inner.prepare(key, parent, labels))

    async def _adopt(self, name: str, parent: str, labels: dict[str, str], served: Servable) -> None:
        """Ends in AlreadyExists, the only "done remotely" signal containerd knows, unless the layer
        (or its whiteout shadows) vanished in between (then it returns and the layer is unpacked locally)."""
        labels[REMOTE_LABEL] = "true"
        if served.flattened:
            labels[CHAIN_LABEL] = served.path  # what restore() checks, and what an operator sees
        try:
            await self._inner.adopt(name, parent, labels, served.path, served.shadows, flattened=served.flattened)
        except AlreadyExistsError:
            pass  # a concurrent unpack of the same chain adopted it first
        except UnavailableError:
            return  # vanished since we looked: the caller falls back to a local unpack
        raise AlreadyExistsError(f"target snapshot {name!r}: already exists (remote layer {served.path})")

    def _report(self, hex_digest: str, decision: Decision) -> None:
        """Every foreign-layer outcome is logged and counted (the layer store logs every outcome at debug)."""
        if decision.outcome in FOREIGN_OUTCOMES:
            log.info("layer %s: %s", hex_digest, REASONS[decision.outcome])
            if self._metrics is not None:
                self._metrics.count(m.FOREIGN_LAYER_PREPARES, {"outcome": decision.outcome})

    async def _chain_id(self, parent: str, hex_digest: str) -> str:
        """DUCC's chain id of this layer on `parent`, "" when a layer below has no digest label."""
        below = await self._chain_of(parent) if parent else ""
        return "" if below is None else next_chain_id(below, f"sha256:{hex_digest}")

    async def _chain_of(self, name: str) -> str | None:
        """The chain id of a committed snapshot, from its and its parents' digest labels; memoized
        (a committed snapshot's parents never change), so an image's Prepares walk each parent once."""
        walked: list[tuple[str, str | None]] = []
        current = name
        while current and current not in self._chains:
            try:
                info = await self._inner.stat(current)
                hex_digest = digest_from_labels(info.labels)
            except (NotFoundError, InvalidArgumentError):
                info, hex_digest = None, None
            walked.append((current, hex_digest))
            current = info.parent if info is not None else ""
        chain: str | None = self._chains.get(current) if current else ""
        for walked_name, hex_digest in reversed(walked):
            chain = next_chain_id(chain, f"sha256:{hex_digest}") if chain is not None and hex_digest else None
            if len(self._chains) >= CHAIN_MEMO_SIZE:
                self._chains.clear()
            self._chains[walked_name] = chain
        return chain

    async def view(self, key: str, parent: str = "", labels: Mapping[str, str] | None = None) -> list[Mount]:
        mounts = await self._inner.view(key, parent, labels)
        served = self._served_on_loop(mounts)
        return served if served is not None else await self._lowers_deduplicated(mounts)

    async def mounts(self, key: str) -> list[Mount]:
        mounts = await self._inner.mounts(key)
        served = self._served_on_loop(mounts)
        return served if served is not None else await self._lowers_deduplicated(mounts)

    def _served_on_loop(self, mounts: list[Mount]) -> list[Mount] | None:
        """Each mount as served, kept by its identity: the overlay snapshotter plans a snapshot's
        mounts once and answers with the same objects, so the options are looked at once, not on
        every Mounts (measured in instructions per call). None when a mount has several lowers:
        deduplicating those resolves paths, which blocks and may change."""
        served = []
        for mount in mounts:
            known = self._kept.get(id(mount))
            if known is None or known[0] is not mount:
                lowerdir = _lowerdir(mount)
                if lowerdir is not None and ":" in lowerdir:
                    return None
                if len(self._kept) >= SERVED_KEPT:
                    self._kept.clear()
                known = self._kept[id(mount)] = (mount, mount if lowerdir is None else
                                                 _one_lower(mount, lowerdir[len("lowerdir=") :]))
            served.append(known[1])
        return served

    async def _ensure_reachable(self, info: Info) -> None:
        """For restore(): the layout layer behind one remote snapshot is still there."""
        hex_digest = digest_from_labels(info.labels)
        if hex_digest is None:
            return  # remote by another snapshotter's convention; nothing of ours to check
        path = info.labels.get(CHAIN_LABEL) or self._store.layer_path(hex_digest)
        if not await self._store.reachable(path):
            raise UnavailableError(f"remote layer {path} of snapshot {info.name!r} is not reachable")

    async def _lowers_deduplicated(self, mounts: list[Mount]) -> list[Mount]:
        """The same layer twice in one chain (repeated empty layers) is one directory twice,
        which overlayfs refuses (ELOOP). Keeping only its topmost occurrence shows the same tree:
        the upper copy already covers every file and whiteout of the lower one. Only two or more
        lowers can repeat one, and resolving them blocks (realpath), so only they leave the loop:
        a chain of one layer costs no thread hop, and a mount with one lower and an upper comes
        back as it is."""
        deduped = []
        for mount in mounts:
            lowerdir = _lowerdir(mount)
            if lowerdir is not None:
                mount = (await asyncio.to_thread(_dedupe_overlay, mount, lowerdir) if ":" in lowerdir
                         else _one_lower(mount, lowerdir[len("lowerdir=") :]))
            deduped.append(mount)
        return deduped

    async def restore(self) -> RestoreReport:
        """At startup: look at every remote snapshot, one by one. A vanished layer only makes its
        own snapshots unavailable (answered on use); nothing is removed and nothing raises."""
        available, unavailable = 0, []
        try:
            async for info in self._inner.walk([f'labels."{REMOTE_LABEL}"']):
                try:
                    await self._ensure_reachable(info)
                    available += 1
                except DomainError as error:
                    log.warning("remote snapshot %s unavailable: %s", info.name, error)
                    unavailable.append(info.name)
        except Exception:  # noqa: BLE001 - startup must never fail on a bad layout
            log.exception("restoring remote snapshots stopped early")
        return RestoreReport(available, tuple(unavailable))

    def stat(self, key: str) -> Coroutine[Any, Any, Info]:
        """The inner snapshotter's own coroutine: no frame of ours on every Stat."""
        return self._inner.stat(key)

    async def update(self, info: Info, fieldpaths: Sequence[str] = ()) -> Info:
        return await self._inner.update(info, fieldpaths)

    async def usage(self, key: str) -> Usage:
        return await self._inner.usage(key)

    async def commit(self, name: str, key: str, labels: Mapping[str, str] | None = None) -> None:
        """A layer containerd unpacked keeps its digest label, so the chain ids above it are known."""
        labels = dict(labels or {})
        if not any(label in labels for label in DIGEST_LABELS):
            with contextlib.suppress(NotFoundError):  # the inner commit says so, in containerd's words
                active = await self._inner.stat(key)
                labels.update({k: v for k, v in active.labels.items() if k in DIGEST_LABELS})
        self._chains.pop(name, None)
        await self._inner.commit(name, key, labels)

    async def remove(self, key: str) -> None:
        self._chains.pop(key, None)  # a name committed again later may sit on other layers
        await self._inner.remove(key)

    def walk(self, filters: Sequence[str] = ()) -> AsyncIterator[Info]:
        return self._inner.walk(filters)

    async def cleanup(self) -> None:
        """The local snapshotter's Cleanup, then the whiteout shadows that can serve nothing more."""
        await self._inner.cleanup()
        in_use: set[str] = set()
        async for info in self._inner.walk([f'labels."{REMOTE_LABEL}"']):
            try:
                hex_digest = digest_from_labels(info.labels)
            except DomainError:
                continue  # conflicting digest labels: adopted by nothing of ours
            if hex_digest:
                in_use.add(hex_digest)
        for hex_digest in await self._store.reclaim_shadows(in_use):
            log.info("reclaimed the whiteout shadows of layer %s (gone from the layout, unused)", hex_digest)


def adopted_name(key: str, target: str) -> str:
    """`<ns>/<id>/<target>` for containerd's backend key shape `<ns>/<id>/<rest>`, else `<target>`.

    containerd takes the name from its Walk, so any name works for it; keeping the key's prefix
    keeps the layer in the caller's namespace (routable by the demux). It does not make the layer
    private: on one snapshotter, containerd may bind another namespace's AlreadyExists to it."""
    namespace, sid, rest = (key.split("/", 2) + ["", ""])[:3]
    if not (rest and sid.isascii() and sid.isdigit()):
        return target
    try:
        validate_namespace(namespace)
    except InvalidArgumentError:
        return target
    return f"{namespace}/{sid}/{target}"


def _lowerdir(mount: Mount) -> str | None:
    """An overlay mount's lowerdir option (the overlay snapshotter puts it last); None for any other."""
    if mount.type != "overlay":
        return None
    for option in reversed(mount.options):
        if option.startswith("lowerdir="):
            return option
    return None


def _one_lower(mount: Mount, lower: str) -> Mount:
    """An overlay of one lower: kept as it is with an upper; read-only, a read-only bind of that lower."""
    if any(option.startswith("upperdir=") for option in mount.options):
        return mount
    return Mount("bind", lower, mount.target, ("ro", "rbind"))


def _dedupe_overlay(mount: Mount, lowerdir: str) -> Mount:
    """Blocking (realpath): each of several lowers kept at its topmost occurrence only."""
    seen: set[str] = set()
    lowers = []
    for lower in lowerdir[len("lowerdir=") :].split(":"):
        real = os.path.realpath(lower)
        if real not in seen:
            seen.add(real)
            lowers.append(lower)
    options = list(mount.options)
    options[options.index(lowerdir)] = "lowerdir=" + ":".join(lowers)
    deduped = Mount(mount.type, mount.source, mount.target, tuple(options))
    return _one_lower(deduped, lowers[0]) if len(lowers) == 1 else deduped
