"""containerd namespaces: validation and the per-call namespace context."""

from __future__ import annotations

import re
from contextvars import ContextVar

from snapmux.domain.errors import InvalidArgumentError

MAX_NAMESPACE_LENGTH = 76
_NAMESPACE_RE = re.compile(r"^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$")

current_namespace: ContextVar[str | None] = ContextVar("current_namespace", default=None)
"""Set by the wire adapter from the `containerd-namespace` metadata, when a caller sends it."""


def validate_namespace(namespace: str) -> str:
    """containerd's identifiers.Validate rule for namespaces."""
    if not namespace:
        raise InvalidArgumentError("namespace must not be empty")
    if len(namespace) > MAX_NAMESPACE_LENGTH:
        raise InvalidArgumentError(f"namespace {namespace[:80]!r} is longer than {MAX_NAMESPACE_LENGTH} characters")
    if not _NAMESPACE_RE.match(namespace):
        raise InvalidArgumentError(f"namespace {namespace[:80]!r} must match {_NAMESPACE_RE.pattern}")
    return namespace


def namespace_of_key(key: str) -> str | None:
    """containerd names backend snapshots `<namespace>/<id>/<name>`; take the prefix."""
    namespace, sep, _ = key.partition("/")
    return namespace if sep and namespace else None
