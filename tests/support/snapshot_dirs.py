"""The entries of a running cvmfs-snapshotter's `snapshots/` that belong to snapshots.

The daemon reserves active snapshots' directories for Prepares to come, in the background
(`adapters/overlay/reserve.py`): `new-*` while one is built, then `<id>` holding a `reserved`
marker. Those appear and go without any call, so a test of what a call changed leaves them out.
"""

from __future__ import annotations

import os
from pathlib import Path

from snapmux.adapters.overlay.layout import NEW_PREFIX, is_reserved


def owned_entries(snapshots: Path) -> list[str]:
    return sorted(entry for entry in os.listdir(snapshots)
                  if not entry.startswith(NEW_PREFIX) and not is_reserved(str(snapshots), entry))
