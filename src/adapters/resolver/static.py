"""Addresses from an operator-maintained file (TOML or JSON), reloaded when it changes.

The file maps namespace -> `{network, address, snapshotter_port, metrics_port,
labels}`; ports are optional and default from configuration. Every lookup does one
`stat` and reparses only when (mtime, size, inode) changed. A file that fails to
parse after an edit keeps the last good map in service (and is logged once); with
no good map ever loaded, lookups are `UnavailableError`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tomllib
from collections.abc import Mapping

from snapmux.adapters.resolver.wire import address_from_json
from snapmux.domain.errors import DomainError, NotFoundError, UnavailableError
from snapmux.domain.model import SnapshotterAddress
from snapmux.domain.namespaces import validate_namespace

log = logging.getLogger(__name__)

_Signature = tuple[int, int, int]


class StaticFileAddressResolver:
    def __init__(self, path: str, *, snapshotter_port: int | None = 10000, metrics_port: int | None = 10001) -> None:
        self.path = path
        self._ports = (snapshotter_port, metrics_port)
        self._map: Mapping[str, SnapshotterAddress] | None = None
        self._seen: _Signature | None = None
        self._checked = False
        self._error = "not loaded yet"
        self._failed = True
        self._lock = asyncio.Lock()

    async def resolve(self, namespace: str) -> SnapshotterAddress:
        validate_namespace(namespace)
        await self._refresh()
        if self._map is None:
            raise UnavailableError(f"address file {self.path} has no usable content: {self._error}")
        try:
            return self._map[namespace]
        except KeyError:
            raise NotFoundError(f"namespace {namespace!r} is not in {self.path}") from None

    async def check(self) -> None:
        """Healthy while the file loads: an unreadable or broken file is reported even while the
        last good map still answers, so the operator hears of it before the next restart."""
        await self._refresh()
        if self._failed:
            kept = "; the last good map still answers" if self._map is not None else ""
            raise UnavailableError(f"address file {self.path} cannot be used: {self._error}{kept}")

    async def _refresh(self) -> None:
        if self._checked and _signature(self.path) == self._seen:
            return
        async with self._lock:
            signature = _signature(self.path)
            if self._checked and signature == self._seen:
                return
            try:
                self._map = await asyncio.to_thread(self._load)
                self._failed = False
                log.info("loaded %d addresses from %s", len(self._map), self.path)
            except (OSError, ValueError, DomainError) as error:
                self._error, self._failed = _reason(error), True
                kept = "keeping the last good map" if self._map is not None else "no map to serve"
                log.error("cannot load address file %s (%s): %s", self.path, kept, error)
            # Marked seen only now, so concurrent first lookups wait for the load instead of
            # racing past it.
            self._checked, self._seen = True, signature

    def _load(self) -> dict[str, SnapshotterAddress]:
        with open(self.path, "rb") as file:
            data = file.read()
        document = json.loads(data) if self.path.endswith(".json") else tomllib.loads(data.decode("utf-8"))
        if not isinstance(document, Mapping):
            raise ValueError("top level must map namespaces to addresses")
        return {self._key(ns): self._entry(ns, entry) for ns, entry in document.items()}

    @staticmethod
    def _key(namespace: object) -> str:
        if not isinstance(namespace, str):
            raise ValueError(f"namespace key {namespace!r} is not a string")
        return validate_namespace(namespace)

    def _entry(self, namespace: str, entry: object) -> SnapshotterAddress:
        return address_from_json(
            entry,
            namespace,
            default_snapshotter_port=self._ports[0],
            default_metrics_port=self._ports[1],
            source=f"{self.path}: [{namespace}]",
        )


def _signature(path: str) -> _Signature | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _reason(error: Exception) -> str:
    """`No such file or directory`, not `[Errno 2] No such file or directory: '<path>'` (the path is said)."""
    return error.strerror if isinstance(error, OSError) and error.strerror else str(error)
