"""CvmfsSnapshotter: serve layers already unpacked in a CVMFS-style layout, download the rest.

A decorator over the local overlay snapshotter. containerd's unpacker prepares each
layer with `containerd.io/snapshot.ref=<chainID>`; when that layer's directory is in the
layout we adopt it as a committed snapshot and answer AlreadyExists, which containerd reads
as "already unpacked" (it then finds it by List on the ref label and the parent, and records
the match's name as the layer's backend key). Otherwise the call goes through unchanged and
containerd downloads the layer, so one missing layer never stops the layers above it from
being served remotely. A foreign layer (see `layers.py`) scanned for whiteouts is adopted with
its shadow trees, which the local snapshotter mounts around it.

The adopted name keeps the Prepare key's `<namespace>/<id>/` prefix when it has containerd's
backend shape: every later call on that layer (Stat, Remove by GC, children's parent) then
carries its namespace, which the demux routes by, and two namespaces sharing one snapshotter
never share (or garbage-collect) each other's layer. Any other key adopts plain `<chainID>`.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from snapmux.adapters.cvmfs.layers import CvmfsLayerStore, Servable, digest_from_labels
from snapmux.domain.errors import (
    AlreadyExistsError,
    DomainError,
    InvalidArgumentError,
    UnavailableError,
)
from snapmux.domain.labels import REF_LABEL, REMOTE_LABEL
from snapmux.domain.model import Info, Mount, Usage
from snapmux.domain.namespaces import validate_namespace
from snapmux.domain.ports import SnapshotService

log = logging.getLogger(__name__)
T = TypeVar("T")


class AdoptingSnapshotService(SnapshotService, Protocol):
    """The local snapshotter, plus adopting an existing read-only directory as a committed snapshot."""

    async def adopt(
        self, name: str, parent: str, labels: Mapping[str, str], source: str, shadows: str = ""
    ) -> Info: ...


@dataclass
class CvmfsCounters:
    """Plain counters; the metrics decorator can read them or pass a listener instead."""

    remote: int = 0
    fallback: int = 0
    unavailable: int = 0


@dataclass(frozen=True)
class RestoreReport:
    available: int = 0
    unavailable: tuple[str, ...] = ()


class CvmfsSnapshotter:
    def __init__(
        self,
        inner: AdoptingSnapshotService,
        store: CvmfsLayerStore,
        listener: Callable[[str], None] | None = None,
    ) -> None:
        self._inner = inner
        self._store = store
        self._listener = listener
        self.counters = CvmfsCounters()

    def _count(self, event: str) -> None:
        setattr(self.counters, event, getattr(self.counters, event) + 1)
        if self._listener is not None:
            self._listener(event)

    async def prepare(self, key: str, parent: str = "", labels: Mapping[str, str] | None = None) -> list[Mount]:
        target = (labels or {}).get(REF_LABEL, "")
        hex_digest = digest_from_labels(labels)
        if target and hex_digest:
            served = await self._store.servable(hex_digest)
            if served is not None:
                await self._adopt(adopted_name(key, target), parent, dict(labels or {}), served)
            self._count("fallback")
        return await self._lowers_deduplicated(await self._counted(self._inner.prepare(key, parent, labels)))

    async def _adopt(self, name: str, parent: str, labels: dict[str, str], served: Servable) -> None:
        """Ends in AlreadyExists, the only "done remotely" signal containerd knows, unless the layer
        (or its whiteout shadows) vanished in between (then it returns and the layer is unpacked locally)."""
        labels[REMOTE_LABEL] = "true"
        try:
            await self._inner.adopt(name, parent, labels, served.path, served.shadows)
        except AlreadyExistsError:
            pass  # a concurrent unpack of the same chain adopted it first
        except UnavailableError:
            return  # vanished since we looked: the caller falls back to a local unpack
        self._count("remote")
        raise AlreadyExistsError(f"target snapshot {name!r}: already exists (remote layer {served.path})")

    async def view(self, key: str, parent: str = "", labels: Mapping[str, str] | None = None) -> list[Mount]:
        return await self._lowers_deduplicated(await self._counted(self._inner.view(key, parent, labels)))

    async def mounts(self, key: str) -> list[Mount]:
        return await self._lowers_deduplicated(await self._counted(self._inner.mounts(key)))

    async def _counted(self, call: Awaitable[T]) -> T:
        """The local snapshotter checks every adopted layer of the chain (one stat each, no walk);
        a vanished one is counted here, not checked a second time."""
        try:
            return await call
        except UnavailableError:
            self._count("unavailable")
            raise

    async def _ensure_reachable(self, info: Info) -> None:
        """For restore(): the layout layer behind one remote snapshot is still there."""
        hex_digest = digest_from_labels(info.labels)
        if hex_digest is None:
            return  # remote by another snapshotter's convention; nothing of ours to check
        path = self._store.layer_path(hex_digest)
        if not await self._store.reachable(path):
            self._count("unavailable")
            raise UnavailableError(f"remote layer {path} of snapshot {info.name!r} is not reachable")

    async def _lowers_deduplicated(self, mounts: list[Mount]) -> list[Mount]:
        """The same layer twice in one chain (repeated empty layers) is one directory twice,
        which overlayfs refuses (ELOOP). Keeping only its topmost occurrence shows the same tree:
        the upper copy already covers every file and whiteout of the lower one."""
        return [await asyncio.to_thread(_dedupe_overlay, mount) for mount in mounts]

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

    async def stat(self, key: str) -> Info:
        return await self._inner.stat(key)

    async def update(self, info: Info, fieldpaths: Sequence[str] = ()) -> Info:
        return await self._inner.update(info, fieldpaths)

    async def usage(self, key: str) -> Usage:
        return await self._inner.usage(key)

    async def commit(self, name: str, key: str, labels: Mapping[str, str] | None = None) -> None:
        await self._inner.commit(name, key, labels)

    async def remove(self, key: str) -> None:
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
    keeps the layer in the caller's namespace (routable by the demux, private to that namespace).
    """
    namespace, sid, rest = (key.split("/", 2) + ["", ""])[:3]
    if not (rest and sid.isascii() and sid.isdigit()):
        return target
    try:
        validate_namespace(namespace)
    except InvalidArgumentError:
        return target
    return f"{namespace}/{sid}/{target}"


def _dedupe_overlay(mount: Mount) -> Mount:
    """Blocking (realpath). A read-only overlay left with one lower becomes a read-only bind."""
    if mount.type != "overlay":
        return mount
    options = list(mount.options)
    index = next((i for i, o in enumerate(options) if o.startswith("lowerdir=")), None)
    if index is None:
        return mount
    seen: set[str] = set()
    lowers = []
    for lower in options[index][len("lowerdir=") :].split(":"):
        real = os.path.realpath(lower)
        if real not in seen:
            seen.add(real)
            lowers.append(lower)
    has_upper = any(o.startswith("upperdir=") for o in options)
    if len(lowers) == 1 and not has_upper:
        return Mount("bind", lowers[0], mount.target, ("ro", "rbind"))
    options[index] = "lowerdir=" + ":".join(lowers)
    return Mount(mount.type, mount.source, mount.target, tuple(options))
