"""Layer and chain digests as they may become paths in the layout: checked before any use."""

from __future__ import annotations

import re

from snapmux.domain.errors import InvalidArgumentError

SHA256 = "sha256:"
_DIGEST = re.compile(r"sha256:([0-9a-f]{64})")


def parse_digest(value: str) -> str:
    """The 64 hex digits of a `sha256:` digest; anything else could become a path, so refuse it."""
    found = _DIGEST.fullmatch(value) if isinstance(value, str) else None
    if not found:
        raise InvalidArgumentError(f"layer digest {str(value)[:100]!r} is not sha256:<64 lowercase hex>")
    return found.group(1)


def digest_or_none(value: str) -> str | None:
    """The hex of a well-formed digest, else None: for hints, where a bad entry is skipped."""
    found = _DIGEST.fullmatch(value)
    return found.group(1) if found else None
