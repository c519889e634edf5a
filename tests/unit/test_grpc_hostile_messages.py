"""The interceptor is the one place a status leaves the server: bounded messages, malformed requests
INVALID_ARGUMENT, logs that a repeating client cannot flood. Over a real grpc.aio server and the fake."""

from __future__ import annotations

import logging
import time

import grpc
import pytest

from snapmux.adapters.grpc import errors
from snapmux.adapters.grpc.errors import (
    DETAILS_HEAD,
    DETAILS_TAIL,
    LOG_INTERVAL_SECONDS,
    RateLimitedLog,
    bounded_details,
)
from snapmux.adapters.grpc.server import start_unix_snapshots_server
from snapmux.adapters.pb.containerd.api.services.snapshots.v1 import snapshots_pb2 as pb
from snapmux.adapters.pb.containerd.api.services.snapshots.v1 import snapshots_pb2_grpc as pb_grpc
from snapmux.domain.model import Info, Kind
from tests.fakes.snapshots import InMemorySnapshotService

SERVICE = "/containerd.services.snapshots.v1.Snapshots/"


class Exploding(InMemorySnapshotService):
    async def stat(self, key: str) -> Info:
        raise RuntimeError("bug " + key)


@pytest.fixture
async def channel(tmp_path):
    server = await start_unix_snapshots_server(Exploding(), str(tmp_path / "s.sock"))
    try:
        async with grpc.aio.insecure_channel(f"unix://{tmp_path / 's.sock'}") as opened:
            yield opened
    finally:
        await server.stop(None)


def test_short_messages_pass_unchanged():
    assert bounded_details("snapshot k: not found") == "snapshot k: not found"
    edge = "x" * (DETAILS_HEAD + DETAILS_TAIL + 32)
    assert bounded_details(edge) == edge


def test_long_messages_keep_their_start_and_end():
    message = "snapshot " + "k" * 100_000 + ": not found"
    bounded = bounded_details(message)
    assert bounded.startswith("snapshot kkk") and bounded.endswith("kkk: not found")
    assert f"[{len(message) - DETAILS_HEAD - DETAILS_TAIL} characters elided]" in bounded
    assert len(bounded) < DETAILS_HEAD + DETAILS_TAIL + 64


def test_the_rate_limited_log_counts_what_it_held_back(caplog):
    limited = RateLimitedLog(logging.getLogger("test.limited"), interval=3600)
    with caplog.at_level(logging.WARNING, "test.limited"):
        for i in range(50):
            limited.log(logging.WARNING, "bad %d", i)
    assert [r.getMessage() for r in caplog.records] == ["bad 0"]
    limited._next = 0.0  # the interval is over
    with caplog.at_level(logging.WARNING, "test.limited"):
        limited.log(logging.WARNING, "bad %d", 50)
    assert caplog.records[-1].getMessage() == "bad 50 (and 49 more like it since the last line)"


@pytest.mark.parametrize("method, payload", [("Stat", b"\x0a\xff\xff"), ("Prepare", b"\x12\x02\xc3\x28"),
                                             ("Usage", b"\x12\x03\xed\xa0\x80"), ("List", b"\x12\x01\xff")])
async def test_a_malformed_request_is_invalid_argument(channel, method, payload):
    call = (channel.unary_stream if method == "List" else channel.unary_unary)(SERVICE + method)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        reply = call(payload)
        if method == "List":
            [_ async for _ in reply]
        else:
            await reply
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details().startswith("malformed request: DecodeError")


async def test_malformed_requests_log_one_line_and_no_traceback(channel, caplog, monkeypatch):
    monkeypatch.setattr(errors, "_malformed_log", RateLimitedLog(errors.log))  # a window no earlier test used
    call = channel.unary_unary(SERVICE + "Stat")
    started = time.monotonic()
    with caplog.at_level(logging.WARNING):
        for _ in range(30):
            with pytest.raises(grpc.aio.AioRpcError):
                await call(b"\x0a\xff\xff")
    lines = [r for r in caplog.records if "malformed request" in r.getMessage()]
    assert 1 <= len(lines) <= 2 + (time.monotonic() - started) // LOG_INTERVAL_SECONDS
    assert not any(r.exc_info for r in caplog.records)


async def test_a_huge_key_in_not_found_keeps_its_code(channel):
    stub = pb_grpc.SnapshotsStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Mounts(pb.MountsRequest(key="k" * (1 << 20)))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert "elided" in raised.value.details() and len(raised.value.details()) < 1024


async def test_an_unexpected_error_is_internal_and_bounded(channel):
    stub = pb_grpc.SnapshotsStub(channel)
    await stub.Prepare(pb.PrepareSnapshotRequest(key="a"))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Stat(pb.StatSnapshotRequest(key="k" * 100_000))
    assert raised.value.code() == grpc.StatusCode.INTERNAL
    assert "RuntimeError" in raised.value.details() and len(raised.value.details()) < 1024
    assert Kind.ACTIVE  # the fake is otherwise intact
    listed = [i.name async for r in stub.List(pb.ListSnapshotsRequest()) for i in r.info]
    assert listed == ["a"]


def test_list_responses_are_bounded_in_bytes_and_keep_the_order():
    from snapmux.adapters.grpc.convert import list_responses

    infos = [Info(f"s{i}", Kind.COMMITTED, labels={"l": "v" * 3000}) for i in range(10)]
    responses = list_responses(infos, 10_000)
    assert [i.name for r in responses for i in r.info] == [f"s{i}" for i in range(10)]
    assert all(r.ByteSize() <= 10_000 for r in responses) and len(responses) == 4
    assert len(list_responses(infos[:1], 10)) == 1  # one Info alone bigger than the bound still goes
    assert list_responses([], 10) == []
