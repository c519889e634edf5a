"""WhiteoutScanner: builds whiteout shadows on a few dedicated threads, never on the event loop.

A Prepare that meets an unscanned foreign layer queues its scan and waits for it up to a
budget (`within`): a layer of 100k small files scans in well under a second, while a download
and unpack costs many. A scan that does not finish in time keeps running for the next Prepare.
Scans are queued ahead too (the other layers of the image, named by the Prepare's labels), so
the unpacker's one-by-one Prepares find them done. At most one scan per digest is in flight;
the threads bound how many run at once. A finished result is found with one look
(`ShadowCache.lookup`), also after a restart.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from snapmux.adapters.cvmfs.whiteouts import ShadowCache, Shadows

log = logging.getLogger(__name__)

SCAN_THREADS = 4
"""Scans are I/O-bound on CVMFS (FUSE round trips): a few run at once."""


class WhiteoutScanner:
    """Queues scans from the event loop; `scans[hex]` is the queued or running scan of a layer."""

    def __init__(self, cache: ShadowCache, threads: int = SCAN_THREADS) -> None:
        self.cache = cache
        self.scans: dict[str, asyncio.Task[Shadows | None]] = {}
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="whiteout-scan")
        self._stop = threading.Event()

    async def start(self) -> None:
        """Clears what scans killed with the previous process left behind."""
        await asyncio.to_thread(self.cache.purge_partial)

    def lookup(self, hex_digest: str) -> Shadows | None:
        """Blocking, O(1): a complete result, else None."""
        return self.cache.lookup(hex_digest)

    def queue(self, hex_digest: str, layerfs: str) -> asyncio.Task[Shadows | None]:
        """At most one scan per digest in flight; a failed one may be queued again by a later Prepare."""
        running = self.scans.get(hex_digest)
        if running is not None:
            return running
        task = asyncio.create_task(self._scan(hex_digest, layerfs))
        self.scans[hex_digest] = task
        return task

    async def within(self, hex_digest: str, layerfs: str, budget: float) -> tuple[bool, Shadows | None]:
        """(finished in time, result): waits up to `budget` seconds; an unfinished scan goes on."""
        task = self.queue(hex_digest, layerfs)
        done, _ = await asyncio.wait({task}, timeout=max(budget, 0.0))
        return (True, task.result()) if done else (False, None)

    async def _scan(self, hex_digest: str, layerfs: str) -> Shadows | None:
        loop = asyncio.get_running_loop()
        try:
            found = await loop.run_in_executor(self._executor, self.cache.build, hex_digest, layerfs, self._stop)
        except Exception as error:  # noqa: BLE001 - a bad layer must not hurt the daemon
            log.warning("whiteout scan of layer %s (%s) failed: %s", hex_digest, layerfs, error)
            return None
        finally:
            self.scans.pop(hex_digest, None)  # before any waiter resumes: a later Prepare may queue again
        log.info("whiteout scan of layer %s done (%s)", hex_digest, "clean" if found.clean else found.path)
        return found

    async def close(self) -> None:
        """Running scans stop at their next directory and leave no result; queued ones never start."""
        self._stop.set()
        pending = list(self.scans.values())
        await asyncio.to_thread(self._executor.shutdown, True, cancel_futures=True)
        await asyncio.gather(*pending, return_exceptions=True)
