"""Snapshot vocabulary, after containerd's `snapshots` package."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import MappingProxyType

from snapmux.domain.errors import InvalidArgumentError

MAX_LABEL_BYTES = 4096
"""containerd's limit on len(key) + len(value) of one label."""

MAX_KEY_BYTES = 4096
"""Keys are opaque to us; the bound only stops abuse (containerd keys are < 200 bytes)."""


class Kind(enum.IntEnum):
    UNKNOWN = 0
    VIEW = 1
    ACTIVE = 2
    COMMITTED = 3

    @property
    def filter_value(self) -> str:
        """The spelling containerd's filter adaptor matches `kind==` against."""
        return self.name.lower()


def _frozen(labels: Mapping[str, str] | None) -> Mapping[str, str]:
    return MappingProxyType(dict(labels or {}))


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class Info:
    """What Stat and List report of one snapshot."""

    name: str
    kind: Kind
    parent: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    created: datetime = field(default_factory=utcnow)
    updated: datetime = field(default_factory=utcnow)

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", _frozen(self.labels))


@dataclass(frozen=True)
class Usage:
    """Disk used by one snapshot alone (not its parents)."""

    size: int = 0
    inodes: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.size + other.size, self.inodes + other.inodes)


@dataclass(frozen=True)
class Mount:
    """One mount(2) a client performs to materialise a snapshot."""

    type: str
    source: str
    target: str = ""
    options: tuple[str, ...] = ()


def validate_key(key: str, what: str = "key") -> None:
    """Keys are opaque strings, never paths; only reject what cannot be stored safely."""
    if not key:
        raise InvalidArgumentError(f"{what} must not be empty")
    if "\x00" in key:
        raise InvalidArgumentError(f"{what} must not contain NUL")
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise InvalidArgumentError(f"{what} is longer than {MAX_KEY_BYTES} bytes")


def validate_labels(labels: Mapping[str, str] | None) -> None:
    for key, value in (labels or {}).items():
        if not key:
            raise InvalidArgumentError("label key must not be empty")
        if len(key.encode()) + len(value.encode()) > MAX_LABEL_BYTES:
            raise InvalidArgumentError(
                f"label key and value greater than maximum size ({MAX_LABEL_BYTES} bytes), key: {key[:64]}"
            )


def apply_update(current: Info, update: Info, fieldpaths: tuple[str, ...] | list[str]) -> Info:
    """containerd's Update: only labels are mutable; an empty mask replaces them all."""
    labels = dict(current.labels)
    if not fieldpaths:
        labels = dict(update.labels)
    for path in fieldpaths:
        if path == "labels":
            labels = dict(update.labels)
        elif path.startswith("labels.") and len(path) > len("labels."):
            key = path[len("labels.") :]
            if key in update.labels:
                labels[key] = update.labels[key]
            else:
                labels.pop(key, None)
        else:
            raise InvalidArgumentError(f'cannot update "{path}" field on snapshot "{current.name}"')
    validate_labels(labels)
    return Info(current.name, current.kind, current.parent, labels, current.created, utcnow())


@dataclass(frozen=True)
class SnapshotterAddress:
    """Where one namespace's remote snapshotter lives, as the resolver reports it."""

    network: str
    address: str
    snapshotter_port: int | None = None
    metrics_port: int | None = None
    labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", _frozen(self.labels))
