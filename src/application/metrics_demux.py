"""The demux's measuring decorators: resolver calls, VM dials, cached clients.

Each wraps a port the demux composes (AddressResolver, SnapshotterConnector) or
listens on the client cache, so routing code stays free of metrics.
"""

from __future__ import annotations

from snapmux.application.metrics import CallTimer, code_of
from snapmux.domain import metrics as m
from snapmux.domain.errors import Code
from snapmux.domain.model import SnapshotterAddress
from snapmux.domain.ports import AddressResolver, RemoteSnapshotter, SnapshotterConnector


class MeasuredAddressResolver:
    """Counts and times resolver lookups as service="resolver", method="Resolve"."""

    def __init__(self, inner: AddressResolver, metrics: m.MetricsRegistry) -> None:
        self._inner, self._metrics = inner, metrics

    async def resolve(self, namespace: str) -> SnapshotterAddress:
        with CallTimer(self._metrics, "resolver", "Resolve"):
            return await self._inner.resolve(namespace)


class MeasuredSnapshotterConnector:
    """Counts dials to VM snapshotters (purpose="snapshotter") and their failures."""

    def __init__(self, inner: SnapshotterConnector, metrics: m.MetricsRegistry) -> None:
        self._inner, self._metrics = inner, metrics

    async def connect(self, namespace: str, address: SnapshotterAddress) -> RemoteSnapshotter:
        labels = {"purpose": "snapshotter"}
        self._metrics.count(m.VSOCK_DIALS, labels)
        try:
            return await self._inner.connect(namespace, address)
        except BaseException as error:
            if code_of(error) != Code.CANCELLED.name:
                self._metrics.count(m.VSOCK_DIAL_FAILURES, labels)
            raise


class RemoteClientsGauge:
    """A client-cache listener keeping `snapmux_remote_clients` equal to the cached VMs."""

    def __init__(self, metrics: m.MetricsRegistry) -> None:
        self._metrics = metrics
        self._namespaces: set[str] = set()
        metrics.set_gauge(m.REMOTE_CLIENTS, 0)

    async def connected(self, namespace: str, address: SnapshotterAddress) -> None:
        self._namespaces.add(namespace)
        self._metrics.set_gauge(m.REMOTE_CLIENTS, len(self._namespaces))

    async def disconnected(self, namespace: str) -> None:
        self._namespaces.discard(namespace)
        self._metrics.set_gauge(m.REMOTE_CLIENTS, len(self._namespaces))
