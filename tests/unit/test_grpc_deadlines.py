"""The caller's deadline crosses every hop: server -> port -> onward call (the demux -> VM).

A VM must not keep working for a caller that has given up (containerd's, ctr's or CRI's
deadline), and a call whose deadline has already passed is not forwarded at all.
"""

from __future__ import annotations

import time

import pytest

from snapmux.domain.deadlines import current_deadline, deadline_in, time_left
from snapmux.domain.errors import DeadlineExceededError, NotFoundError
from snapmux.domain.model import Info
from tests.fakes.snapshots import InMemorySnapshotService
from tests.support.grpc_client import served_over_grpc


class DeadlineRecordingService(InMemorySnapshotService):
    """Records how much time its caller left it, as the port sees it."""

    def __init__(self) -> None:
        super().__init__()
        self.time_left: list[float | None] = []

    async def stat(self, key: str) -> Info:
        deadline = current_deadline.get()
        self.time_left.append(None if deadline is None else deadline - time.monotonic())
        return await super().stat(key)


@pytest.fixture
def caller_deadline():
    """Sets the test's own deadline; the client under test sends what is left of it. (An async
    test runs in a copy of the context; the reset is for the synchronous one.)"""
    yield lambda seconds: current_deadline.set(deadline_in(seconds))
    current_deadline.set(None)


def test_time_left_is_the_callers_remaining_time_capped_by_the_hops_own(caller_deadline):
    assert time_left(5.0) == 5.0 and time_left() is None
    caller_deadline(30)
    assert 29 < time_left() <= 30 and time_left(2.0) == 2.0
    caller_deadline(-1)
    with pytest.raises(DeadlineExceededError, match="deadline passed"):
        time_left(5.0)


async def test_the_server_hands_the_callers_deadline_to_the_port(tmp_path, caller_deadline):
    service = DeadlineRecordingService()
    async with served_over_grpc(service, str(tmp_path / "s.sock")) as client:
        with pytest.raises(NotFoundError):
            await client.stat("none")
        caller_deadline(30)
        with pytest.raises(NotFoundError):
            await client.stat("none")
    unbounded, bounded = service.time_left
    assert unbounded is None and 25 < bounded < 31


async def test_the_demux_forwards_what_is_left_of_the_callers_deadline(demux, caller_deadline):
    vm = DeadlineRecordingService()
    demux.vms["vm-a"].stat = vm.stat  # the VM's port, seen through demux -> vsock -> in-VM server
    caller_deadline(30)
    with pytest.raises(NotFoundError):
        await demux.client.stat("vm-a/1/none")
    assert len(vm.time_left) == 1 and vm.time_left[0] is not None and 20 < vm.time_left[0] < 31


async def test_a_passed_deadline_is_not_forwarded(demux, caller_deadline):
    vm = DeadlineRecordingService()
    demux.vms["vm-a"].stat = vm.stat
    caller_deadline(-1)
    with pytest.raises(DeadlineExceededError):
        await demux.client.stat("vm-a/1/none")
    assert vm.time_left == []


class CallerRecordingService(InMemorySnapshotService):
    """Records the caller's namespace and deadline as the port sees them."""

    def __init__(self) -> None:
        super().__init__()
        self.heard: list[tuple[object, object]] = []

    async def stat(self, key: str) -> Info:
        from snapmux.domain.namespaces import current_namespace

        self.heard.append((current_namespace.get(), current_deadline.get()))
        return await super().stat(key)


@pytest.mark.parametrize("caller_context", [True, False])
async def test_a_server_without_caller_context_hands_the_port_neither_namespace_nor_deadline(
    tmp_path, caller_deadline, caller_context
):
    """cvmfs-snapshotter's server (CALLER_CONTEXT False): nothing there acts on a caller's behalf."""
    import grpc

    from snapmux.adapters.grpc.client import GrpcSnapshotService
    from snapmux.adapters.grpc.server import start_unix_snapshots_server
    from snapmux.domain.namespaces import current_namespace
    from snapmux.entrypoints.cvmfs_snapshotter.container import CALLER_CONTEXT

    assert CALLER_CONTEXT is False
    service = CallerRecordingService()
    path = str(tmp_path / "s.sock")
    server = await start_unix_snapshots_server(service, path, caller_context=caller_context)
    channel = grpc.aio.insecure_channel(f"unix://{path}")
    try:
        current_namespace.set("ns1")
        caller_deadline(30)
        with pytest.raises(NotFoundError):
            await GrpcSnapshotService(channel, "test").stat("none")
    finally:
        await channel.close()
        await server.stop(None)
    [(namespace, deadline)] = service.heard
    assert (namespace, deadline is not None) == (("ns1", True) if caller_context else (None, False))
