"""Garbage collection of a shared layout: layers and chains no wanted image references any more.

What is referenced comes from the image records (`.metadata/images/*.json`, written by every
publish, also before its layers): a record is live while its image is wanted (`wanted`: the
record keys of this run's recipe) or was published less than `grace` seconds ago, because
nodes may still run containers from it. Layers published by snapmux (the marker) that no
live record names go, and chains a dead record names and no live one does (chains carry
no marker; DUCC's own are never touched); then the dead records, unless something they
name was busy and is left for the next collection.

One collector at a time (`.metadata/.gc.lock`). Each removal holds the entry's own lock
(a publisher writing it right now keeps it) and is atomic: rename to `.tmp-gc-*` beside it,
sync the directory, then delete; the name a reader looks up is gone before anything inside
it is. A killed collector leaves only `.tmp-*` names, which nothing reads.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field

from snapmux.adapters.cvmfs import ducc
from snapmux.adapters.cvmfs.blob_spool import PART_PREFIX
from snapmux.adapters.cvmfs.locks import DEFAULT_STALE_AFTER, FileLock
from snapmux.adapters.cvmfs.whiteout_names import PUBLISHED_MARKER
from snapmux.adapters.durable import fsync_dir
from snapmux.domain.errors import InvalidArgumentError

log = logging.getLogger(__name__)

_HEX = frozenset("0123456789abcdef")


@dataclass
class GcReport:
    layers: list[str] = field(default_factory=list)
    chains: list[str] = field(default_factory=list)
    records: int = 0
    busy: int = 0

    def line(self) -> str:
        return (f"gc: removed {len(self.layers)} layer(s), {len(self.chains)} chain(s), {self.records} record(s)"
                f"; {self.busy} in use by a publisher, left")


def collect(base: str, wanted: set[str], grace: float, stale_after: float = DEFAULT_STALE_AFTER) -> GcReport:
    base = os.path.abspath(base)
    report = GcReport()
    with FileLock(ducc.metadata_dir(base, ducc.GC_LOCK), stale_after).held():
        _remove_interrupted(base)
        live, dead = _records(base, wanted, time.time() - grace)
        keep_layers = _hexes(live, "layers")
        ours = _hexes([record for _, record in dead], "chains") - _hexes(live, "chains")
        for hex_digest, path in _entries(base, ducc.LAYERS_DIR):
            if hex_digest not in keep_layers and os.path.isfile(os.path.join(path, PUBLISHED_MARKER)):
                _remove(path, hex_digest, report.layers, report, stale_after)
        for hex_digest, path in _entries(base, ducc.CHAINS_DIR):
            if hex_digest in ours:  # chains carry no marker: only those a record of ours named
                _remove(path, hex_digest, report.chains, report, stale_after)
        _remove_parts(base, keep_layers, report, stale_after)
        if not report.busy:  # else the records still name what is left, for the next collection
            for path, _ in dead:
                os.unlink(path)
                report.records += 1
    return report


def _remove_parts(base: str, keep: set[str], report: GcReport, stale_after: float) -> None:
    """Downloads cut short (blob_spool.py) of layers nobody wants any more."""
    root = os.path.join(base, ducc.LAYERS_DIR)
    for prefix in os.listdir(root) if os.path.isdir(root) else []:
        folder = os.path.join(root, prefix)
        for name in os.listdir(folder) if os.path.isdir(folder) else []:
            hex_digest = name.removeprefix(PART_PREFIX)
            if name.startswith(PART_PREFIX) and hex_digest not in keep:
                lock = FileLock(os.path.join(folder, ducc.LOCK_PREFIX + hex_digest), stale_after)
                if lock.try_acquire():
                    try:
                        os.unlink(os.path.join(folder, name))
                    finally:
                        lock.release()


def _hexes(records: list[dict], key: str) -> set[str]:
    return {digest.removeprefix("sha256:") for record in records for digest in record[key]}


def _remove_interrupted(base: str) -> None:
    """`.tmp-gc-*` of a killed collector (only collectors make them, and we are the one now)."""
    for kind in (ducc.LAYERS_DIR, ducc.CHAINS_DIR):
        root = os.path.join(base, kind)
        for prefix in os.listdir(root) if os.path.isdir(root) else []:
            folder = os.path.join(root, prefix)
            for name in os.listdir(folder) if os.path.isdir(folder) else []:
                if name.startswith(ducc.GC_ASIDE_PREFIX):
                    shutil.rmtree(os.path.join(folder, name), ignore_errors=True)


def _records(base: str, wanted: set[str], cutoff: float) -> tuple[list[dict], list[tuple[str, dict]]]:
    folder = ducc.metadata_dir(base, ducc.IMAGE_RECORDS_DIR)
    live, dead = [], []
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        if not name.endswith(".json") or name.startswith("."):
            continue
        path = os.path.join(folder, name)
        try:
            with open(path, "rb") as handle:
                record = json.load(handle)
            recent = float(record["last_published"]) >= cutoff
            if not isinstance(record["layers"], list) or not isinstance(record["chains"], list):
                raise TypeError("layers and chains must be lists")
        except (OSError, ValueError, KeyError, TypeError) as error:
            # what it protects is unknown: collecting anyway could remove an image still in use
            raise InvalidArgumentError(f"gc: image record {path} is unreadable ({error}); not collecting") from None
        if name.removesuffix(".json") in wanted or recent:
            live.append(record)
        else:
            dead.append((path, record))
    return live, dead


def _entries(base: str, kind: str) -> list[tuple[str, str]]:
    root = os.path.join(base, kind)
    found = []
    for prefix in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        folder = os.path.join(root, prefix)
        if len(prefix) != 2 or not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            if len(name) == 64 and set(name) <= _HEX and name[:2] == prefix:
                found.append((name, os.path.join(folder, name)))
    return found


def _remove(path: str, hex_digest: str, removed: list[str], report: GcReport, stale_after: float) -> None:
    lock = FileLock(os.path.join(os.path.dirname(path), ducc.LOCK_PREFIX + hex_digest), stale_after)
    if not lock.try_acquire():
        report.busy += 1
        return
    try:
        aside = os.path.join(os.path.dirname(path), f"{ducc.GC_ASIDE_PREFIX}{hex_digest}-{uuid.uuid4().hex[:8]}")
        os.rename(path, aside)
        fsync_dir(os.path.dirname(path))
        shutil.rmtree(aside)
        removed.append(hex_digest)
    finally:
        lock.release()
