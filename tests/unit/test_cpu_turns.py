"""CPU-bound List work in turns: others run between slices, and nothing is lost or reordered."""

from __future__ import annotations

import asyncio
import time

from snapmux.adapters.cpu_turns import SLICE_SECONDS, cpu_turn, kept


async def test_kept_keeps_what_the_predicate_accepts_in_order():
    assert [i async for i in kept(list(range(10_000)), lambda i: i % 3 == 0)] == list(range(0, 10_000, 3))
    assert [i async for i in kept([], lambda i: True)] == []


async def test_a_slow_predicate_lets_other_tasks_run_between_items():
    ticks = 0

    async def other() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    def slow(item: int) -> bool:
        time.sleep(SLICE_SECONDS * 1.5)  # every item exhausts a slice
        return True

    ticker = asyncio.create_task(other())
    await asyncio.sleep(0)
    try:
        before = ticks
        assert [i async for i in kept(list(range(8)), slow)] == list(range(8))
        assert ticks - before >= 7
    finally:
        ticker.cancel()


async def test_turns_are_taken_one_at_a_time():
    inside, most = 0, 0

    async def worker() -> None:
        nonlocal inside, most
        for _ in range(5):
            async with cpu_turn():
                inside += 1
                most = max(most, inside)
                await asyncio.sleep(0)  # even a holder that yields keeps the others out
                inside -= 1

    await asyncio.gather(*(worker() for _ in range(20)))
    assert most == 1
