"""MeasuredSnapshotService keeps the SnapshotService contract: measuring changes no answer.

The demux and cvmfs-snapshotter both serve through it, so whatever it wraps must come out the
other side unchanged: results, errors (class and message) and streams.
"""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from snapmux.adapters.prometheus.registry import PrometheusMetricsRegistry
from snapmux.application.metrics import MeasuredSnapshotService
from tests.contract.snapshot_service import SnapshotServiceContract
from tests.fakes.metrics import InMemoryMetricsRegistry
from tests.fakes.snapshots import InMemorySnapshotService


class TestMeasuredSnapshotServiceOverTheFake(SnapshotServiceContract):
    @pytest.fixture
    async def snapshots(self):
        return MeasuredSnapshotService(InMemorySnapshotService(), InMemoryMetricsRegistry())


class TestMeasuredSnapshotServiceIntoPrometheus(SnapshotServiceContract):
    """The same, with every call's metrics going into a real CollectorRegistry."""

    @pytest.fixture
    async def snapshots(self):
        return MeasuredSnapshotService(InMemorySnapshotService(), PrometheusMetricsRegistry(CollectorRegistry()))
