"""Disk usage of a snapshot's own files, as containerd's continuity fs.DiskUsage counts it.

Each inode is counted once (hard links and the root included) and sized by its
allocated blocks (st_blocks * 512), so sparse files report what they occupy.
The walk never follows symlinks and never crosses into an adopted source.
"""

from __future__ import annotations

import os

from snapmux.domain.model import Usage


def disk_usage(root: str) -> Usage:
    seen: set[tuple[int, int]] = set()
    size = 0
    stack = [root]
    try:
        st = os.lstat(root)
    except FileNotFoundError:
        return Usage()
    seen.add((st.st_dev, st.st_ino))
    size += st.st_blocks * 512
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                size += st.st_blocks * 512
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
    return Usage(size=size, inodes=len(seen))
