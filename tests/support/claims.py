"""What the TargetClaims tests share: reading the claims, the List containerd sends after
AlreadyExists, and letting the loop run until every task blocks."""

from __future__ import annotations

import asyncio

from snapmux.application.target_claims import TargetClaims
from snapmux.domain.labels import REF_LABEL


def claimed(claims: TargetClaims) -> dict[str, str | None]:
    """Target -> owning namespace (None while its Prepare is still in flight), read from inside."""
    return {target: claim.owner for target, claim in claims._claims.items()}


def walk_filter(target: str, parent: str = "") -> str:
    """Exactly what containerd 1.6's metadata snapshotter sends after AlreadyExists."""
    return f'labels."{REF_LABEL}"=={target},parent=="{parent}"'


async def settle() -> None:
    """Lets every runnable task run until it blocks (no wall-clock time involved)."""
    for _ in range(20):
        await asyncio.sleep(0)


def users(claims: TargetClaims, target: str) -> int:
    """How many calls hold or wait for `target`'s claim (0: unclaimed)."""
    claim = claims._claims.get(target)
    return claim.users if claim is not None else 0
