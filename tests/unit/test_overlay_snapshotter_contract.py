"""The SnapshotService contract against OverlaySnapshotter (SQLite + directories), directly and over gRPC."""

from __future__ import annotations

import pytest

from snapmux.adapters.overlay.reserve import RESERVED
from snapmux.adapters.overlay.snapshotter import OverlaySnapshotter
from tests.contract.snapshot_service import SnapshotServiceContract
from tests.support.grpc_client import served_over_grpc


class TestOverlaySnapshotter(SnapshotServiceContract):
    @pytest.fixture
    async def snapshots(self, tmp_path):
        snapshotter = await OverlaySnapshotter.open(str(tmp_path / "root"))
        try:
            yield snapshotter
        finally:
            await snapshotter.close()


class TestOverlaySnapshotterOverGrpc(SnapshotServiceContract):
    @pytest.fixture
    async def snapshots(self, tmp_path):
        snapshotter = await OverlaySnapshotter.open(str(tmp_path / "root"))
        try:
            async with served_over_grpc(snapshotter, str(tmp_path / "s.sock"), "cvmfs") as client:
                yield client
        finally:
            await snapshotter.close()


class TestOverlaySnapshotterWithReservations(SnapshotServiceContract):
    """As the daemon runs it: active snapshots' directories reserved ahead of Prepare."""

    @pytest.fixture
    async def snapshots(self, tmp_path):
        snapshotter = await OverlaySnapshotter.open(str(tmp_path / "root"), reserve=RESERVED)
        try:
            yield snapshotter
        finally:
            await snapshotter.close()
