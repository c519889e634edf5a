"""Hooks shared by every test suite."""

from __future__ import annotations

import asyncio

import uvloop


def pytest_asyncio_loop_factories(config, item):  # type: ignore[no-untyped-def]
    """`mark.asyncio(loop_factories=EVERY_LOOP)` runs a test on both loops the daemons may use: a
    guarantee that holds on one loop's scheduling order only is a bug. Other tests: asyncio's loop only
    (the hook must always answer a mapping, and an unmarked test runs on all of it)."""
    marker = item.get_closest_marker("asyncio")
    if marker is None or "loop_factories" not in marker.kwargs:
        return {"asyncio": asyncio.new_event_loop}
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


EVERY_LOOP = ["asyncio", "uvloop"]
