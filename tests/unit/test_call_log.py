"""The call log interceptor, over the real grpc.aio server: each call at debug with its fields,
failures that are not protocol answers as warnings, nothing but warnings above debug."""

from __future__ import annotations

import logging

import pytest

from snapmux.domain.errors import AlreadyExistsError, NotFoundError
from snapmux.domain.namespaces import current_namespace
from tests.fakes.snapshots import InMemorySnapshotService
from tests.support.grpc_client import served_over_grpc

LOGGER = "snapmux.calls"


async def some_calls(tmp_path) -> None:
    async with served_over_grpc(InMemorySnapshotService(), str(tmp_path / "s.sock")) as client:
        token = current_namespace.set("ns1")
        try:
            await client.prepare("k1")
            await client.commit("layer-1", "k1")
            with pytest.raises(AlreadyExistsError):
                await client.prepare("layer-1")  # ALREADY_EXISTS: the answer to a layer that is already there
            with pytest.raises(NotFoundError):
                await client.stat("none")  # NOT_FOUND on Stat: containerd's "does it exist?"
            with pytest.raises(NotFoundError):
                await client.remove("gone")
            assert [info.name async for info in client.walk()] == ["layer-1"]
        finally:
            current_namespace.reset(token)


async def test_at_debug_every_call_is_one_line_with_method_namespace_key_code_and_duration(tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    await some_calls(tmp_path)
    debug = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.DEBUG]
    assert [(r.method, r.namespace, r.key, r.code) for r in debug] == [
        ("Prepare", "ns1", "k1", "OK"), ("Commit", "ns1", "k1", "OK"), ("Prepare", "ns1", "layer-1", "ALREADY_EXISTS"),
        ("Stat", "ns1", "none", "NOT_FOUND"), ("Remove", "ns1", "gone", "NOT_FOUND"), ("List", "ns1", "", "OK"),
    ]
    assert debug[1].commit_name == "layer-1" and all(r.duration_ms >= 0 for r in debug)


async def test_at_info_only_the_unexpected_failure_is_a_warning_with_its_cause(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    await some_calls(tmp_path)
    [warning] = [r for r in caplog.records if r.name == LOGGER]
    assert (warning.levelname, warning.method, warning.key, warning.code) == ("WARNING", "Remove", "gone", "NOT_FOUND")
    assert "gone" in warning.error and warning.getMessage().startswith("Remove failed: NOT_FOUND: ")
