"""Fixtures shared by unit tests.

`vsock`: the Firecracker vsock stand-in with a guest agent (the `guest` unix socket) on
GUEST_PORT. The agent speaks first, as a real one may (its first bytes must follow the
stand-in's `OK` untouched), then echoes; what it says first is the requesting module's
`guest_greeting` fixture.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.support.firecracker_vsock import FirecrackerVsockStandIn

GUEST_PORT = 10000
"""The snapshotter's in-VM port, as in production."""


@pytest.fixture
async def guest(tmp_path, guest_greeting: bytes):
    async def greet_then_echo(reader, writer):
        writer.write(guest_greeting)
        while data := await reader.read(1024):
            writer.write(data)
        writer.close()

    path = str(tmp_path / "guest.sock")
    server = await asyncio.start_unix_server(greet_then_echo, path)
    yield path
    server.close()


@pytest.fixture
async def vsock(tmp_path, guest):
    standin = await FirecrackerVsockStandIn(str(tmp_path / "v.sock"), {GUEST_PORT: guest}).start()
    yield standin
    await standin.stop()
