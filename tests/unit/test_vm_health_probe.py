"""The demux's per-VM health poll asks the VM snapshotter's own grpc.health.v1 Check.

A snapshotter that is starting or draining says NOT_SERVING while its socket still answers
calls; one without the health service (containerd's Go proxy snapshotters) is asked a Stat.
"""

from __future__ import annotations

import pytest

from snapmux.adapters.grpc.health import SnapshotsHealth
from snapmux.adapters.grpc.server import start_unix_snapshots_server
from snapmux.adapters.vsock.connector import HEALTH_PROBE_KEY, VsockSnapshotterConnector
from snapmux.domain.errors import NotFoundError
from snapmux.domain.model import SnapshotterAddress
from tests.fakes.snapshots import InMemorySnapshotService


class CountingSnapshots(InMemorySnapshotService):
    def __init__(self) -> None:
        super().__init__()
        self.stats: list[str] = []

    async def stat(self, key):  # type: ignore[no-untyped-def]
        self.stats.append(key)
        return await super().stat(key)


@pytest.fixture
def snapshots():
    return CountingSnapshots()


async def _client(tmp_path, snapshots, health):
    path = str(tmp_path / "vm.sock")
    server = await start_unix_snapshots_server(snapshots, path, health=health)
    connector = VsockSnapshotterConnector(timeout=2.0, retry_interval=0.02)
    client = await connector.connect("ns", SnapshotterAddress("unix", path))
    return server, connector, client


@pytest.fixture
async def served(tmp_path, snapshots):
    health = SnapshotsHealth()
    server, connector, client = await _client(tmp_path, snapshots, health)
    yield health, client
    await client.close()
    await connector.close()
    await server.stop(None)


async def test_a_serving_snapshotter_is_healthy_without_a_snapshots_call(served, snapshots):
    health, client = served
    await health.serving()
    assert await client.healthy()
    assert snapshots.stats == []


async def test_a_snapshotter_not_serving_yet_is_unhealthy(served):
    _, client = served
    assert not await client.healthy()


async def test_a_draining_snapshotter_is_unhealthy_while_it_still_answers_calls(served):
    health, client = served
    await health.serving()
    await health.stopping()
    assert not await client.healthy()
    with pytest.raises(NotFoundError):  # its socket still answers calls
        await client.stat("nope")


async def test_a_snapshotter_without_the_health_service_is_asked_a_stat(tmp_path, snapshots):
    server, connector, client = await _client(tmp_path, snapshots, health=None)
    try:
        assert await client.healthy()
        assert await client.healthy()
        assert snapshots.stats == [HEALTH_PROBE_KEY, HEALTH_PROBE_KEY]
    finally:
        await client.close()
        await connector.close()
        await server.stop(None)
