"""Which namespace the Walk that follows a remote snapshot belongs to.

containerd 1.6 handles a remote snapshot (a Prepare answered AlreadyExists) by Walking the
backend with `labels."containerd.io/snapshot.ref"==<target>,parent=="<bparent>"` and recording
the first committed match's name as the layer's backend key. It sends proxy snapshotters no
namespace, so that Walk reaches the demux namespace-less and would fan out over every VM; when
several VMs hold the layer (they serve the same published layers; bparent is "" for a bottom
layer) the match may come from another VM, and containerd would route this namespace's layer
there.

So a namespace-less Prepare carrying the ref label claims its target: while the VM answers, and
after an AlreadyExists until the namespace-less List asking for that target arrives (or `hold`
seconds pass: containerd gave up), the target belongs to the Prepare's namespace and that List
goes to its VM only. Any other outcome releases at once. One lock per target, so two
namespaces pulling the same layer wait for each other on that layer only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from snapmux.domain.errors import AlreadyExistsError, InvalidArgumentError
from snapmux.domain.filters import required_value
from snapmux.domain.labels import REF_LABEL

log = logging.getLogger(__name__)
T = TypeVar("T")

_REF_FIELD = ("labels", REF_LABEL)


class Cancellable(Protocol):
    def cancel(self) -> None: ...


Scheduler = Callable[[float, Callable[[], None]], Cancellable]
"""`schedule(delay, callback)`: the event loop's `call_later` by default; tests fire it by hand."""


def _call_later(delay: float, callback: Callable[[], None]) -> Cancellable:
    return asyncio.get_running_loop().call_later(delay, callback)


@dataclass(eq=False)
class _Claim:
    target: str
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0  # holder plus waiters: the entry goes when nobody needs it
    owner: str | None = None
    expiry: Cancellable | None = None


class TargetClaims:
    def __init__(self, hold: float = 10.0, schedule: Scheduler = _call_later) -> None:
        self._hold = hold
        self._schedule = schedule
        self._claims: dict[str, _Claim] = {}

    async def prepare(self, namespace: str, target: str, forward: Callable[[], Awaitable[T]]) -> T:
        """`forward()` under the target's claim; an AlreadyExists keeps it for the List that follows."""
        claim = await self._acquire(target)
        try:
            result = await forward()
        except AlreadyExistsError:
            self._keep(claim, namespace)
            raise
        except BaseException:
            self._release(claim)
            raise
        self._release(claim)
        return result

    def owner(self, filters: Sequence[str]) -> str | None:
        """The namespace whose remote snapshot this List looks for (the claim is then released), else None."""
        try:
            target = required_value(filters, _REF_FIELD)
        except InvalidArgumentError:
            return None  # the fan-out answers it, with the VMs' own error
        claim = self._claims.get(target) if target is not None else None
        if claim is None or claim.owner is None:
            return None
        owner = claim.owner
        self._release(claim)
        return owner

    async def _acquire(self, target: str) -> _Claim:
        claim = self._claims.setdefault(target, _Claim(target))
        claim.users += 1
        try:
            await claim.lock.acquire()
        except BaseException:
            claim.users -= 1
            self._forget_if_unused(claim)
            raise
        return claim

    def _keep(self, claim: _Claim, namespace: str) -> None:
        claim.owner = namespace
        expiry: Cancellable | None = None

        def expire() -> None:
            if claim.expiry is expiry:  # not already released (and maybe claimed again) meanwhile
                log.warning("no List for remote snapshot %s of namespace %s within %gs: claim released",
                            claim.target, namespace, self._hold)
                self._release(claim)

        expiry = claim.expiry = self._schedule(self._hold, expire)

    def _release(self, claim: _Claim) -> None:
        if claim.expiry is not None:
            claim.expiry.cancel()
        claim.owner, claim.expiry = None, None
        claim.lock.release()
        claim.users -= 1
        self._forget_if_unused(claim)

    def _forget_if_unused(self, claim: _Claim) -> None:
        if claim.users == 0 and self._claims.get(claim.target) is claim:
            del self._claims[claim.target]
