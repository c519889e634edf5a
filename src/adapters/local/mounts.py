"""The mounts a client performs for a snapshot, exactly as containerd's overlayfs snapshotter builds them.

No parents: a bind mount of the snapshot's own fs (rw, or ro for a view).
A view with one parent: a read-only bind of the parent. Otherwise overlayfs
with `lowerdir` listing parents nearest first; a parent adopted with whiteout shadows
contributes three lowerdirs, `wh-upper:fs:wh-lower`. Every path stays under
`<root>/snapshots/`, so containerd's mount code can compact a long lowerdir
list relative to that common directory (128 layers and more).
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterator
from dataclasses import dataclass

from snapmux.adapters.local.layout import Layout
from snapmux.domain.model import Kind, Mount


def running_in_user_namespace() -> bool:
    """containerd's userns.RunningInUserNS: the initial namespace maps the full uid range."""
    try:
        with open("/proc/self/uid_map") as handle:
            fields = handle.read().split()
    except OSError:
        return False
    return fields[:3] != ["0", "0", "4294967295"]


def overlay_supports_index() -> bool:
    """containerd sets index=off whenever the kernel exposes the parameter."""
    return os.path.exists("/sys/module/overlay/parameters/index")


@dataclass(frozen=True)
class MountOptions:
    """Host facts decided once at startup, as containerd does in NewSnapshotter."""

    index_off: bool
    userxattr: bool

    @classmethod
    def detect(cls) -> MountOptions:
        # Kernels >= 5.11 (this project targets 6.x) accept userxattr; it is only needed in a userns.
        return cls(index_off=overlay_supports_index(), userxattr=running_in_user_namespace())


def mounts_for(
    layout: Layout,
    options: MountOptions,
    kind: Kind,
    snapshot_id: int,
    parent_ids: list[int],
    shadowed: Collection[int] = (),
) -> list[Mount]:
    """`shadowed`: the parents adopted with whiteout shadows (never a bind: the shadows must apply)."""
    if not parent_ids:
        mode = "ro" if kind == Kind.VIEW else "rw"
        return [Mount("bind", layout.fs_path(snapshot_id), options=(mode, "rbind"))]
    if kind == Kind.VIEW and len(parent_ids) == 1 and parent_ids[0] not in shadowed:
        return [Mount("bind", layout.fs_path(parent_ids[0]), options=("ro", "rbind"))]
    flags: list[str] = []
    if options.index_off:
        flags.append("index=off")
    if options.userxattr:
        flags.append("userxattr")
    if kind == Kind.ACTIVE:
        flags += [f"workdir={layout.work_path(snapshot_id)}", f"upperdir={layout.fs_path(snapshot_id)}"]
    flags.append("lowerdir=" + ":".join(_lowers(layout, parent_ids, shadowed)))
    return [Mount("overlay", "overlay", options=tuple(flags))]


def _lowers(layout: Layout, parent_ids: list[int], shadowed: Collection[int]) -> Iterator[str]:
    for pid in parent_ids:
        if pid in shadowed:
            yield from (layout.wh_upper_path(pid), layout.fs_path(pid), layout.wh_lower_path(pid))
        else:
            yield layout.fs_path(pid)
