"""Watching the whiteout scanner: the daemon neither counts nor waits for scans, tests do."""

from __future__ import annotations

import asyncio

from snapmux.adapters.cvmfs.scanner import WhiteoutScanner
from snapmux.adapters.cvmfs.whiteouts import Shadows


async def scans_done(scanner: WhiteoutScanner) -> None:
    """Returns once no scan is queued or running (a scan leaves `scans` before its waiters resume,
    so a scan queued meanwhile is waited for too)."""
    while scanner.scans:
        await asyncio.gather(*list(scanner.scans.values()), return_exceptions=True)


class CountingScanner(WhiteoutScanner):
    """`started`: how many scans were queued (a digest already in flight starts none)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.started = 0

    def queue(self, hex_digest: str, layerfs: str) -> asyncio.Task[Shadows | None]:
        if hex_digest not in self.scans:
            self.started += 1
        return super().queue(hex_digest, layerfs)
