"""VsockForwarder's splice on either event loop: what the VM says first reaches gRPC, on the
first connection, whenever the loop delivers it (uvloop reads an accepted socket before
connect_accepted_socket returns; asyncio happens not to)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from snapmux.adapters.vsock.forwarder import VsockForwarder
from tests.conftest import EVERY_LOOP

pytestmark = pytest.mark.asyncio(loop_factories=EVERY_LOOP)

PREFACE = b"server-settings-frame"


class FakeDialer:
    """Each dial is a fresh socketpair whose VM end has already spoken (and maybe hung up)."""

    def __init__(self, hang_up: bool = False) -> None:
        self.hang_up = hang_up
        self.dials = 0
        self.vm_ends: list[socket.socket] = []

    def __str__(self) -> str:
        return "fake vsock"

    def pair(self) -> socket.socket:
        ours, vm = socket.socketpair()
        ours.setblocking(False)
        vm.sendall(PREFACE)
        if self.hang_up:
            vm.shutdown(socket.SHUT_WR)
        self.vm_ends.append(vm)
        return ours

    async def dial(self) -> socket.socket:
        self.dials += 1
        for _ in range(5):
            await asyncio.sleep(0)  # an adversarial dial: several turns of the loop
        return self.pair()


@pytest.fixture
async def forwarding(tmp_path):
    dialer = FakeDialer()
    forwarder = await VsockForwarder(dialer, str(tmp_path / "vm.sock")).start()  # type: ignore[arg-type]
    yield dialer, forwarder
    await forwarder.close()
    for vm in dialer.vm_ends:
        vm.close()


async def first_bytes(forwarder: VsockForwarder) -> bytes:
    reader, writer = await asyncio.open_unix_connection(forwarder.path)
    try:
        return await asyncio.wait_for(reader.readexactly(len(PREFACE)), 5)
    finally:
        writer.close()


async def test_an_adopted_socket_passes_on_what_the_vm_said_before_the_splice(forwarding):
    dialer, forwarder = forwarding
    forwarder.adopt(dialer.pair())
    assert await first_bytes(forwarder) == PREFACE
    assert dialer.dials == 0


async def test_a_dialled_socket_passes_on_what_the_vm_said_before_the_splice(forwarding):
    dialer, forwarder = forwarding
    assert await first_bytes(forwarder) == PREFACE
    assert dialer.dials == 1


async def test_many_concurrent_connections_each_get_their_own_dial_and_preface(forwarding):
    dialer, forwarder = forwarding
    assert await asyncio.gather(*(first_bytes(forwarder) for _ in range(16))) == [PREFACE] * 16
    assert dialer.dials == 16


async def test_a_vm_that_spoke_and_hung_up_before_the_splice_is_heard_then_ends_the_connection(forwarding):
    dialer, forwarder = forwarding
    dialer.hang_up = True
    reader, writer = await asyncio.open_unix_connection(forwarder.path)
    try:
        assert await asyncio.wait_for(reader.read(), 5) == PREFACE  # read() to EOF: then closed
    finally:
        writer.close()
    assert forwarder.last_failure == "fake vsock: connection closed by the VM"
