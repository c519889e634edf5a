"""run_event_loop: uvloop by default, asyncio's own loop on request, a clear error otherwise."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from snapmux.entrypoints.lifecycle import EVENT_LOOP_ENV, run_event_loop
from snapmux.entrypoints.settings_sources import ConfigError


def loop_used() -> tuple[list[type], object]:
    seen: list[type] = []

    async def main() -> None:
        seen.append(type(asyncio.get_running_loop()))

    return seen, main()


def test_uvloop_is_the_default(monkeypatch):
    monkeypatch.delenv(EVENT_LOOP_ENV, raising=False)
    seen, main = loop_used()
    run_event_loop(main)  # type: ignore[arg-type]
    assert seen == [uvloop.Loop]


def test_asyncio_on_request(monkeypatch):
    monkeypatch.setenv(EVENT_LOOP_ENV, "asyncio")
    seen, main = loop_used()
    run_event_loop(main)  # type: ignore[arg-type]
    assert seen and not issubclass(seen[0], uvloop.Loop) and issubclass(seen[0], asyncio.BaseEventLoop)


def test_an_unknown_loop_is_a_config_error_naming_the_variable(monkeypatch):
    monkeypatch.setenv(EVENT_LOOP_ENV, "tokio")
    seen, main = loop_used()
    with pytest.raises(ConfigError, match=r"^SNAPMUX_EVENT_LOOP: 'tokio' is not an event loop \(want one of uvloop, asyncio\)$"):
        run_event_loop(main)  # type: ignore[arg-type]
    assert seen == []
