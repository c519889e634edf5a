"""Turns on the event loop for CPU-bound work: List walks, filter evaluation, protobuf conversion.

grpc.aio accepts each new call from a task on the event loop, one per loop iteration, and gRPC
core gives up on a call left unaccepted too long. With a thousand Lists each converting a batch
per iteration, an iteration took seconds and the calls still queued behind them were cancelled;
a costly filter over many snapshots held the loop for the whole walk. So CPU-bound work runs in
slices of at most `SLICE_SECONDS`, one slice per loop iteration (FIFO among the Lists that want
one), and everything else (accepting calls, Stat, Prepare, sends) runs between two slices.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TypeVar

T = TypeVar("T")

SLICE_SECONDS = 0.002

_gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()


@contextlib.asynccontextmanager
async def cpu_turn() -> AsyncIterator[None]:
    """Hold the running loop's one CPU turn; afterwards let the loop run everything else once."""
    loop = asyncio.get_running_loop()
    gate = _gates.get(loop)
    if gate is None:
        gate = _gates[loop] = asyncio.Semaphore(1)  # one per loop: a Semaphore binds to its first loop
    async with gate:
        yield
    await asyncio.sleep(0)


async def kept(items: Sequence[T], keep: Callable[[T], bool]) -> AsyncIterator[T]:
    """The items `keep` accepts, in order, evaluated in slices of `SLICE_SECONDS`."""
    position = 0
    while position < len(items):
        async with cpu_turn():
            found, position = _slice(items, position, keep)
        for item in found:
            yield item


def _slice(items: Sequence[T], start: int, keep: Callable[[T], bool]) -> tuple[list[T], int]:
    """Always makes progress (one item at least), however slow `keep` is."""
    deadline = time.perf_counter() + SLICE_SECONDS
    found: list[T] = []
    for index in range(start, len(items)):
        if keep(items[index]):
            found.append(items[index])
        if time.perf_counter() >= deadline:
            return found, index + 1
    return found, len(items)
