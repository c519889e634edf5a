"""Measuring decorators over the ports, and samplers computed on scrape.

Decorators rather than a gRPC interceptor: they see domain errors before the
wire maps them, work the same under the demux (over the routing service) and
the in-VM snapshotter, and are testable with fakes. Codes are gRPC status names
because that is what operators see in containerd's logs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any, TypeVar

from snapmux.domain import errors as e
from snapmux.domain import metrics as m
from snapmux.domain.labels import REF_LABEL
from snapmux.domain.model import Info, Kind, Mount, Usage
from snapmux.domain.ports import SnapshotRelay, SnapshotService

T = TypeVar("T")


def code_of(error: BaseException) -> str:
    """The status name the wire will answer for `error`: a domain error's declared code,
    CANCELLED for a cancelled task, INTERNAL for anything unclassified."""
    if isinstance(error, e.DomainError):
        return error.code.name
    return e.Code.CANCELLED.name if isinstance(error, asyncio.CancelledError) else e.Code.INTERNAL.name


class CallTimer:
    """Times one call and reports it, with the code of whatever ended it."""

    def __init__(self, metrics: m.MetricsRegistry, service: str, method: str) -> None:
        self._metrics, self._service, self._method = metrics, service, method
        self.code = m.OK

    def __enter__(self) -> CallTimer:
        self._started = time.perf_counter()
        return self

    def __exit__(self, kind: Any, error: BaseException | None, tb: Any) -> None:
        if error is not None and not isinstance(error, GeneratorExit):  # a List the caller stopped reading
            self.code = code_of(error)
        self._metrics.observe_call(self._service, self._method, self.code, time.perf_counter() - self._started)


async def timed(observe: Callable[[str, str, str, float], None], service: str, method: str, call: Awaitable[T]) -> T:
    """`call` awaited, counted by the code it ended with and timed: the one coroutine of ours per
    unary call (the decorators hand it back). `call` must raise only when awaited (a coroutine),
    or its error would go uncounted."""
    started = time.perf_counter()
    try:
        result = await call
    except BaseException as error:
        observe(service, method, code_of(error), time.perf_counter() - started)
        raise
    observe(service, method, m.OK, time.perf_counter() - started)
    return result


class MeasuredSnapshotService:
    """SnapshotService decorator: every call counted by code and timed; remote hits and fallbacks.

    A unary method hands back `_timed`'s coroutine around the inner call's, so each call has one
    frame of ours and no context manager: `with CallTimer` cost a Stat more than its own lookup
    (an object and three method calls; measured in instructions per call). List, a stream, keeps
    `CallTimer`, which also hears a reader that stopped early."""

    def __init__(self, inner: SnapshotService, metrics: m.MetricsRegistry, service: str = "snapshots") -> None:
        self._inner, self._metrics, self._service = inner, metrics, service
        self._observe = metrics.observe_call

    def _timed(self, method: str, call: Awaitable[T]) -> Coroutine[Any, Any, T]:
        return timed(self._observe, self._service, method, call)

    def stat(self, key: str) -> Coroutine[Any, Any, Info]:
        return self._timed("Stat", self._inner.stat(key))

    def update(self, info: Info, fieldpaths: Sequence[str] = ()) -> Coroutine[Any, Any, Info]:
        return self._timed("Update", self._inner.update(info, fieldpaths))

    def usage(self, key: str) -> Coroutine[Any, Any, Usage]:
        return self._timed("Usage", self._inner.usage(key))

    def mounts(self, key: str) -> Coroutine[Any, Any, list[Mount]]:
        return self._timed("Mounts", self._inner.mounts(key))

    def prepare(
        self, key: str, parent: str = "", labels: Mapping[str, str] | None = None
    ) -> Coroutine[Any, Any, list[Mount]]:
        return self._timed("Prepare", self._prepare(key, parent, labels))

    async def _prepare(self, key: str, parent: str, labels: Mapping[str, str] | None) -> list[Mount]:
        remote = bool(labels) and REF_LABEL in labels  # type: ignore[operator]
        try:
            mounts = await self._inner.prepare(key, parent, labels)
        except e.AlreadyExistsError:
            if remote:  # containerd's remote-snapshot signal: the layer is already there (CVMFS)
                self._metrics.count(m.REMOTE_SNAPSHOT_HITS)
            raise
        if remote:  # a plain active snapshot: containerd downloads and unpacks the layer
            self._metrics.count(m.REMOTE_SNAPSHOT_FALLBACKS)
        return mounts

    def view(
        self, key: str, parent: str = "", labels: Mapping[str, str] | None = None
    ) -> Coroutine[Any, Any, list[Mount]]:
        return self._timed("View", self._inner.view(key, parent, labels))

    def commit(self, name: str, key: str, labels: Mapping[str, str] | None = None) -> Coroutine[Any, Any, None]:
        return self._timed("Commit", self._inner.commit(name, key, labels))

    def remove(self, key: str) -> Coroutine[Any, Any, None]:
        return self._timed("Remove", self._inner.remove(key))

    async def walk(self, filters: Sequence[str] = ()) -> AsyncIterator[Info]:
        with CallTimer(self._metrics, self._service, "List"):
            async for info in self._inner.walk(filters):
                yield info

    def cleanup(self) -> Coroutine[Any, Any, None]:
        return self._timed("Cleanup", self._inner.cleanup())


class MeasuredSnapshotRelay:
    """SnapshotRelay decorator: the demux's forwarded calls counted by method and code and timed,
    with the metrics `MeasuredSnapshotService` gives the calls of a snapshotter, the same way
    (`timed`; List by `CallTimer`). (The remote-snapshot hit and fallback counters are the in-VM
    snapshotter's, which decides: docs/metrics.md.)"""

    def __init__(self, inner: SnapshotRelay, metrics: m.MetricsRegistry, service: str = "snapshots") -> None:
        self._inner, self._metrics, self._service = inner, metrics, service
        self._observe = metrics.observe_call

    def forward(self, method: str, key: str, request: bytes) -> Coroutine[Any, Any, bytes]:
        return timed(self._observe, self._service, method, self._inner.forward(method, key, request))

    def forward_mounts(self, key: str, request: bytes) -> Coroutine[Any, Any, bytes]:
        return timed(self._observe, self._service, "Mounts", self._inner.forward_mounts(key, request))

    def forward_create(self, method: str, key: str, labels: Mapping[str, str], request: bytes) -> Coroutine[Any, Any, bytes]:
        return timed(self._observe, self._service, method, self._inner.forward_create(method, key, labels, request))

    def forward_commit(self, name: str, key: str, request: bytes) -> Coroutine[Any, Any, bytes]:
        return timed(self._observe, self._service, "Commit", self._inner.forward_commit(name, key, request))

    async def forward_list(self, filters: Sequence[str], request: bytes) -> AsyncIterator[bytes]:
        with CallTimer(self._metrics, self._service, "List"):
            async for reply in self._inner.forward_list(filters, request):
                yield reply

    def forward_cleanup(self, request: bytes) -> Coroutine[Any, Any, bytes]:
        return timed(self._observe, self._service, "Cleanup", self._inner.forward_cleanup(request))


class SnapshotInventory:
    """Sampled on scrape: snapshots by kind and the disk usage of committed ones.

    Computed rather than maintained so it is right after a restart and whatever
    path (GC, adopt, crash recovery) changed the store. Usage sums committed
    snapshots only: theirs is recorded at commit (cheap to read), while an active
    snapshot's Usage walks the container's writable layer, which no scrape should
    do for every container. A snapshot removed mid-walk is skipped.
    """

    def __init__(self, snapshots: SnapshotService, metrics: m.MetricsRegistry) -> None:
        self._snapshots, self._metrics = snapshots, metrics

    async def sample(self) -> None:
        kinds = {kind: 0 for kind in Kind if kind != Kind.UNKNOWN}
        size = 0
        async for info in self._snapshots.walk(()):
            kinds[info.kind] = kinds.get(info.kind, 0) + 1
            if info.kind != Kind.COMMITTED:
                continue
            try:
                size += (await self._snapshots.usage(info.name)).size
            except e.NotFoundError:
                continue
        for kind, number in kinds.items():
            self._metrics.set_gauge(m.SNAPSHOTS, number, {"kind": kind.filter_value})
        self._metrics.set_gauge(m.SNAPSHOTS_USAGE_BYTES, size)
