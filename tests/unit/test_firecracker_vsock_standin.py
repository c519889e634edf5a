"""The Firecracker hybrid-vsock stand-in speaks the protocol of docs/vsock.md, faults included."""

from __future__ import annotations

import asyncio
import socket

import pytest

from tests.support.firecracker_vsock import FIRST_HOST_PORT, FirecrackerVsockStandIn
from tests.unit.conftest import GUEST_PORT as PORT


@pytest.fixture
def guest_greeting():
    """What the guest behind `vsock` (see conftest) says before echoing."""
    return b"hello\n"


async def connect(vsock, command: bytes = b"CONNECT %d\n" % PORT):
    reader, writer = await asyncio.open_unix_connection(vsock.uds_path)
    writer.write(command)
    return reader, writer


async def test_connect_gets_ok_with_an_assigned_port_then_a_stream(vsock):
    for n in range(2):
        reader, writer = await connect(vsock)
        assert await reader.readline() == b"OK %d\n" % (FIRST_HOST_PORT + n)
        assert await reader.readline() == b"hello\n"  # the guest's first bytes follow the ack untouched
        writer.write(b"ping\n")
        assert await reader.readline() == b"ping\n"
        writer.close()
    assert vsock.handshakes == 2


@pytest.mark.parametrize("command", [b"CONNECT 10001\n", b"connect 10000\n", b"CONNECT x\n"])
async def test_no_guest_listener_or_a_bad_command_closes_without_answer(vsock, command):
    reader, writer = await connect(vsock, command)
    assert await reader.read() == b""
    writer.close()


async def test_refuse_closes_after_connect(vsock):
    vsock.refuse = True
    reader, writer = await connect(vsock)
    assert await reader.read() == b""
    vsock.refuse = False
    reader, writer = await connect(vsock)
    assert (await reader.readline()).startswith(b"OK ")


async def test_a_guest_agent_that_starts_late(vsock, guest):
    vsock.unlisten(PORT)
    reader, _ = await connect(vsock)
    assert await reader.read() == b""
    vsock.listen(PORT, guest)
    reader, _ = await connect(vsock)
    assert (await reader.readline()).startswith(b"OK ")


async def test_ack_delay_holds_the_ok_back(vsock):
    vsock.ack_delay = 0.5
    reader, _ = await connect(vsock)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(reader.readline(), 0.05)
    assert (await reader.readline()).startswith(b"OK ")


async def test_drop_connections_cuts_live_streams(vsock):
    reader, writer = await connect(vsock)
    await reader.readline()
    await reader.readline()
    assert vsock.drop_connections() >= 1
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
        await reader.readexactly(1)


async def test_stopped_device_refuses_or_is_missing(tmp_path, guest):
    standin = await FirecrackerVsockStandIn(str(tmp_path / "v.sock"), {PORT: guest}).start()
    await standin.stop(unlink=False)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with pytest.raises(ConnectionRefusedError):
        probe.connect(standin.uds_path)
    probe.close()
    await standin.stop()
    with pytest.raises(FileNotFoundError):
        await asyncio.open_unix_connection(standin.uds_path)


async def test_cut_next_request_loses_the_bytes_and_cuts_the_stream(vsock):
    reader, writer = await connect(vsock)
    await reader.readline()
    await reader.readline()
    vsock.cut_next_request = True
    writer.write(b"lost\n")
    assert await reader.read() == b""
    assert not vsock.cut_next_request


async def test_pause_holds_every_byte_until_resume(vsock):
    reader, writer = await connect(vsock)
    await reader.readline()
    await reader.readline()
    vsock.pause()
    writer.write(b"held\n")
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(reader.readline(), 0.1)
    vsock.resume()
    assert await reader.readline() == b"held\n"
