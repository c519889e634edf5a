"""The order of a daemon's shutdown as a health watcher sees it: `SnapshotsHealth.stopping`
returns only once each open Watch has sent its final status and grpc has finished the call,
because the daemon stops the server (GOAWAY, then exit) right after it."""

from __future__ import annotations

import asyncio

from grpc_health.v1 import health_pb2

from snapmux.adapters.grpc import health as health_module
from snapmux.adapters.grpc.health import NOT_SERVING, SERVING, SnapshotsHealth
from tests.support.polling import until


class WatchContext:
    """What Watch uses of a grpc.aio ServicerContext; `finish` is grpc running the done callbacks
    once the call's status is sent. A context that is `stuck` never completes a write (a client
    that stopped reading, its flow-control window full)."""

    def __init__(self, stuck: bool = False) -> None:
        self.sent: list[int] = []
        self.finished = False
        self._callbacks: list = []
        self._stuck = stuck

    def add_done_callback(self, callback) -> None:  # type: ignore[no-untyped-def]
        self._callbacks.append(callback)

    async def write(self, reply: health_pb2.HealthCheckResponse) -> None:
        if self._stuck and self.sent:
            await asyncio.Event().wait()
        self.sent.append(reply.status)

    def finish(self) -> None:
        self.finished = True
        for callback in self._callbacks:
            callback(self)


async def watched(health: SnapshotsHealth, context: WatchContext) -> None:
    try:
        await health.Watch(health_pb2.HealthCheckRequest(), context)
    finally:
        context.finish()


async def test_stopping_returns_after_every_watch_has_sent_its_end():
    health, contexts = SnapshotsHealth(), [WatchContext(), WatchContext()]
    await health.serving()
    tasks = [asyncio.create_task(watched(health, context)) for context in contexts]
    await until(lambda: all(context.sent for context in contexts), "each watch's first reply")
    await health.stopping()
    assert [(c.sent, c.finished) for c in contexts] == [([SERVING, NOT_SERVING], True)] * 2
    await asyncio.gather(*tasks)


async def test_a_watch_that_cannot_send_its_end_holds_stopping_only_for_a_bounded_time(monkeypatch):
    monkeypatch.setattr(health_module, "WATCH_END_SECONDS", 0.01)
    health, context = SnapshotsHealth(), WatchContext(stuck=True)
    await health.serving()
    task = asyncio.create_task(watched(health, context))
    await until(lambda: bool(context.sent), "the watch's first reply")
    await health.stopping()
    assert (context.sent, context.finished) == ([SERVING], False)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert context.finished

