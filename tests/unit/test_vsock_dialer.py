"""VsockDialer against the Firecracker stand-in: handshake, retries while the agent starts, fatal errors."""

from __future__ import annotations

import asyncio

import pytest

from snapmux.adapters.vsock.dialer import VsockDialer
from snapmux.domain.errors import UnavailableError
from tests.unit.conftest import GUEST_PORT as PORT


@pytest.fixture
def guest_greeting():
    """What the guest behind `vsock` (see conftest) says before echoing."""
    return b"guest-first-bytes"


def dialer(vsock, **kwargs) -> VsockDialer:
    options = {"timeout": 2.0, "retry_interval": 0.01, "ack_timeout": 0.2} | kwargs
    return VsockDialer(vsock.uds_path, PORT, **options)


async def test_the_stream_starts_with_the_guests_first_byte(vsock):
    sock = await dialer(vsock).dial()
    try:
        reader, writer = await asyncio.open_unix_connection(sock=sock)
        assert await reader.readexactly(len(b"guest-first-bytes")) == b"guest-first-bytes"
        writer.write(b"echo")
        assert await reader.readexactly(4) == b"echo"
        writer.close()
    finally:
        sock.close()
    assert vsock.handshakes == 1


async def test_a_missing_socket_fails_at_once_by_name(tmp_path):
    missing = VsockDialer(str(tmp_path / "nope.sock"), PORT, timeout=30)
    with pytest.raises(UnavailableError, match=r"nope\.sock port 10000: No such file"):
        await missing.dial()


async def test_a_refusing_socket_fails_at_once(vsock):
    await vsock.stop(unlink=False)
    with pytest.raises(UnavailableError, match="Connection refused"):
        await dialer(vsock, timeout=30).dial()


async def test_retries_until_the_guest_agent_listens(vsock, guest):
    vsock.unlisten(PORT)

    async def agent_starts_after_three_refusals():
        while vsock.accepted < 3:
            await asyncio.sleep(0.005)
        vsock.listen(PORT, guest)

    starter = asyncio.create_task(agent_starts_after_three_refusals())
    sock = await dialer(vsock).dial()
    sock.close()
    await starter
    assert vsock.accepted >= 4 and vsock.handshakes == 1


async def test_gives_up_after_the_timeout_naming_socket_port_and_cause(vsock):
    vsock.refuse = True
    with pytest.raises(UnavailableError, match=r"v\.sock port 10000 within 1s: connection closed before OK"):
        await dialer(vsock, timeout=1.0).dial()  # ~100 retry intervals: room for several tries on a busy machine
    assert vsock.accepted > 1


async def test_an_attempt_cut_short_by_the_deadline_keeps_the_cause_before_it(tmp_path):
    """The last try gets only what is left of the timeout; its silence must not hide the refusal."""
    accepted = 0

    async def refuse_once_then_stall(reader, writer):
        nonlocal accepted
        accepted += 1
        await reader.readline()
        if accepted == 1:
            writer.close()
            return
        await reader.read()  # never answers; the dialer gives up and closes

    path = str(tmp_path / "v.sock")
    server = await asyncio.start_unix_server(refuse_once_then_stall, path)
    try:
        with pytest.raises(UnavailableError, match="within 0.3s: connection closed before OK"):
            await VsockDialer(path, PORT, timeout=0.3, retry_interval=0.01, ack_timeout=1.0).dial()
    finally:
        server.close()
    assert accepted == 2


async def test_a_slow_ack_is_retried_then_given_up(vsock):
    vsock.ack_delay = 5
    with pytest.raises(UnavailableError, match="no OK within"):
        await dialer(vsock, timeout=1.0, ack_timeout=0.1).dial()
    assert vsock.accepted >= 2


async def test_a_slow_ack_within_the_ack_timeout_is_fine(vsock):
    vsock.ack_delay = 0.05
    sock = await dialer(vsock, ack_timeout=1.0).dial()
    sock.close()
    assert vsock.handshakes == 1


async def test_not_firecracker_is_reported_without_retrying(tmp_path):
    async def chatty(reader, writer):
        writer.write(b"SSH-2.0-OpenSSH\n")

    path = str(tmp_path / "other.sock")
    server = await asyncio.start_unix_server(chatty, path)
    try:
        with pytest.raises(UnavailableError, match="unexpected handshake answer"):
            await VsockDialer(path, PORT, timeout=30).dial()
    finally:
        server.close()
