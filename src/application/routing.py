"""The demux: containerd's snapshot calls, routed by namespace to the snapshotter in that VM.

Namespace of a call: the `containerd-namespace` metadata when the caller sent it,
else the `<namespace>/<id>/<name>` prefix containerd gives every backend key
(containerd 1.6 sends no metadata to proxy plugins). A call that carries neither is
FailedPrecondition, a malformed namespace InvalidArgument: no silent default VM.

Fan-out (List/Cleanup with no namespace, i.e. containerd's garbage collector):
the reachable VMs answer, an unreachable one (or one silent for `fan_out_timeout`) is
logged and skipped. Failing the whole walk would stall GC for every namespace because
of one dead VM (and containerd holds its snapshotter lock while GC walks), while a
partial answer is safe: GC only removes snapshots it was shown.

Remote snapshots: the namespace-less List containerd makes right after a Prepare answered
AlreadyExists goes to that Prepare's VM only (`TargetClaims`), not fanned out, so a layer
several VMs hold is always recorded in the VM of the namespace that pulled it.

The router is the `SnapshotRelay` the demux's server calls: each request's bytes go on to the
VM and its reply's bytes come back, routed by the fields the server read from the request.
Nothing here becomes a domain type; the one reply changed, the mounts of Prepare/View/Mounts,
the forwarder marks with the router's prefix (`vm_local_mounts`, the rule's one home).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import TypeVar

from snapmux.domain.errors import (
    DeadlineExceededError,
    FailedPreconditionError,
    InvalidArgumentError,
    UnavailableError,
)
from snapmux.domain.filters import parse_filters
from snapmux.domain.labels import REF_LABEL
from snapmux.domain.namespaces import current_namespace, namespace_of_key, validate_namespace
from snapmux.domain.ports import SnapshotForwarder

from snapmux.application.remote_clients import CachedRemote, RemoteSnapshotterCache
from snapmux.application.target_claims import TargetClaims

log = logging.getLogger(__name__)
T = TypeVar("T")

_UNREACHABLE = (UnavailableError, DeadlineExceededError)


class NamespaceRouter:
    """A SnapshotRelay whose every call lands on one namespace's remote snapshotter (or, namespace-less
    List and Cleanup, on every connected one)."""

    def __init__(
        self,
        remotes: RemoteSnapshotterCache,
        mount_type_prefix: str = "vm:",
        fan_out_timeout: float = 10.0,
        claims: TargetClaims | None = None,
    ) -> None:
        self._remotes = remotes
        self._prefix = mount_type_prefix  # firecracker-containerd's runtime mounts `vm:` types inside the VM
        self._fan_out_timeout = fan_out_timeout
        self._claims = claims or TargetClaims(hold=fan_out_timeout)

    @staticmethod
    def _named(key: str) -> str | None:
        """The caller's namespace metadata, else the key's `<namespace>/` prefix; not yet validated."""
        return current_namespace.get() or namespace_of_key(key)

    def _namespace(self, key: str) -> str:
        namespace = self._named(key)
        if namespace is None:
            raise FailedPreconditionError(
                f"namespace is required: no containerd-namespace metadata and key {key!r} has no <namespace>/ prefix"
            )
        return validate_namespace(namespace)

    async def _call(self, key: str, call: Callable[[SnapshotForwarder], Awaitable[T]]) -> T:
        # the hot path: a connected namespace was validated when it was dialled, and is found without a coroutine
        namespace = self._named(key)
        client = self._remotes.connected(namespace) if namespace is not None else None
        if client is None:
            namespace = self._namespace(key)
            client = await self._remotes.get(namespace)
        try:
            return await call(client)
        except UnavailableError:
            await self._remotes.discard(namespace, client)  # the next call dials afresh
            raise

    def forward(self, method: str, key: str, request: bytes) -> Awaitable[bytes]:
        """Plain functions handing back `_call`'s coroutine (also below): one frame less per call."""
        return self._call(key, lambda c: c.forward(method, request))

    def forward_mounts(self, key: str, request: bytes) -> Awaitable[bytes]:
        return self._call(key, lambda c: c.forward_mounts("Mounts", request, self._prefix))

    async def forward_create(self, method: str, key: str, labels: Mapping[str, str], request: bytes) -> bytes:
        """A namespace-less layer Prepare/View claims its target for the List containerd makes after AlreadyExists."""
        target = labels.get(REF_LABEL)

        def create() -> Awaitable[bytes]:
            return self._call(key, lambda c: c.forward_mounts(method, request, self._prefix))

        if not target or current_namespace.get() is not None:  # with metadata, that List carries it too
            return await create()
        return await self._claims.prepare(self._namespace(key), target, create)

    async def forward_commit(self, name: str, key: str, request: bytes) -> bytes:
        """Without metadata the key names the namespace: a name in another one would land in the wrong VM."""
        if current_namespace.get() is None:
            into = namespace_of_key(name)
            if into is not None and into != namespace_of_key(key):
                raise InvalidArgumentError(f"cannot commit {key!r} as {name!r}: the name is in another namespace")
        return await self._call(key, lambda c: c.forward("Commit", request))

    async def forward_list(self, filters: Sequence[str], request: bytes) -> AsyncIterator[bytes]:
        namespace = current_namespace.get() or self._claims.owner(filters)
        if namespace is not None:
            client = await self._remotes.get(validate_namespace(namespace))
            try:
                async for reply in client.forward_stream("List", request):
                    yield reply
            except UnavailableError:
                await self._remotes.discard(namespace, client)
                raise
            return
        parse_filters(filters)  # malformed: the caller's InvalidArgument, even when no VM is connected to say so
        for replies in await self._fan_out(lambda c: _collect(c.forward_stream("List", request)), "list"):
            for reply in replies:
                yield reply

    async def forward_cleanup(self, request: bytes) -> bytes:
        if current_namespace.get() is not None:
            await self._call("", lambda c: c.forward("Cleanup", request))
        else:
            await self._fan_out(lambda c: c.forward("Cleanup", request), "cleanup")
        return b""  # google.protobuf.Empty, also when several VMs answered

    async def _fan_out(self, call: Callable[[SnapshotForwarder], Awaitable[T]], what: str) -> list[T]:
        """Every connected VM at once (one per address); unreachable ones are skipped, other errors raised."""
        remotes = list({_address_key(r): r for r in self._remotes.cached()}.values())
        results = await asyncio.gather(*(self._bounded(call(r.client)) for r in remotes), return_exceptions=True)
        answered: list[T] = []
        for remote, result in zip(remotes, results):
            if isinstance(result, _UNREACHABLE):
                log.warning("%s without namespace: skipping unreachable VM of %s: %s", what, remote.namespace, result)
                if isinstance(result, UnavailableError):
                    await self._remotes.discard(remote.namespace, remote.client)
            elif isinstance(result, BaseException):
                raise result
            else:
                answered.append(result)
        return answered

    async def _bounded(self, call: Awaitable[T]) -> T:
        """containerd holds its snapshotter lock while GC walks: one stalled VM must not stall every namespace."""
        try:
            return await asyncio.wait_for(call, self._fan_out_timeout)
        except asyncio.TimeoutError:
            raise DeadlineExceededError(f"no answer within {self._fan_out_timeout:g}s") from None


async def _collect(items: AsyncIterator[bytes]) -> list[bytes]:
    return [item async for item in items]


def _address_key(remote: CachedRemote) -> tuple[str, str, int | None]:
    return (remote.address.network, remote.address.address, remote.address.snapshotter_port)
