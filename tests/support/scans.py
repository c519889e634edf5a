"""Waiting for the whiteout scanner: the daemon never waits for a scan, tests do."""

from __future__ import annotations

import asyncio

from snapmux.adapters.cvmfs.scanner import WhiteoutScanner


async def scans_done(scanner: WhiteoutScanner) -> None:
    """Returns once no scan is queued or running (a scan leaves `scans` before its waiters resume,
    so a scan queued meanwhile is waited for too)."""
    while scanner.scans:
        await asyncio.gather(*list(scanner.scans.values()), return_exceptions=True)
