"""ttrpc framing (containerd/ttrpc channel.go).

Every message is a 10-byte big-endian header — uint32 payload length, uint32
stream id, uint8 type, uint8 flags — followed by the payload. Payloads above
4 MiB are refused both ways, as ttrpc does.
"""

from __future__ import annotations

import asyncio
import struct
from typing import NamedTuple

HEADER = struct.Struct(">IIBB")
MAX_MESSAGE = 4 << 20
TYPE_REQUEST = 1
TYPE_RESPONSE = 2


class FrameError(Exception):
    """The byte stream is not ttrpc (or not one we accept); the connection is unusable."""


class Frame(NamedTuple):
    stream_id: int
    type: int
    flags: int
    payload: bytes


def encode_frame(stream_id: int, type_: int, payload: bytes, flags: int = 0, max_size: int = MAX_MESSAGE) -> bytes:
    if len(payload) > max_size:
        raise FrameError(f"message of {len(payload)} bytes exceeds the ttrpc limit of {max_size}")
    return HEADER.pack(len(payload), stream_id, type_, flags) + payload


async def read_frame(reader: asyncio.StreamReader, max_size: int = MAX_MESSAGE) -> Frame:
    """Reads one frame; raises `asyncio.IncompleteReadError` on EOF, `FrameError` on oversize."""
    length, stream_id, type_, flags = HEADER.unpack(await reader.readexactly(HEADER.size))
    if length > max_size:
        raise FrameError(f"peer sent a {length}-byte message, over the ttrpc limit of {max_size}")
    return Frame(stream_id, type_, flags, await reader.readexactly(length))
