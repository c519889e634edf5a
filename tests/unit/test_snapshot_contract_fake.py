"""The contract suite against the in-memory fake, directly and over real gRPC."""

from __future__ import annotations

import pytest

from tests.contract.snapshot_service import SnapshotServiceContract
from tests.fakes.snapshots import InMemorySnapshotService
from tests.support.grpc_client import served_over_grpc


class TestInMemorySnapshotService(SnapshotServiceContract):
    @pytest.fixture
    async def snapshots(self):
        return InMemorySnapshotService()


class TestGrpcRoundTripOverFake(SnapshotServiceContract):
    """Client -> server -> fake: codes and messages survive the wire both ways."""

    @pytest.fixture
    async def snapshots(self, tmp_path):
        async with served_over_grpc(InMemorySnapshotService(), str(tmp_path / "s.sock")) as client:
            yield client
