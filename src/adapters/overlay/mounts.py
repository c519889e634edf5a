"""The mounts a client performs for a snapshot, exactly as containerd's overlayfs snapshotter builds them.

No parents: a bind mount of the snapshot's own fs (rw, or ro for a view).
A view with one plain parent: a read-only bind of the parent. Otherwise overlayfs
with `lowerdir` listing parents nearest first, as `lowers.stack` lays them out (whiteout
shadows around adopted foreign layers, merged where adjacent; nothing below a flattened
chain; CVMFS's catalog markers hidden). Every path shares one directory (`<root>/snapshots/`,
or `<root>/l/` for long stacks), so containerd's mount code can compact the list relative to it
and the mount data stays under a page for any depth overlayfs accepts.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from snapmux.adapters.overlay.layout import Layout
from snapmux.adapters.overlay.lowers import stack
from snapmux.adapters.overlay.sqlite_store import Link
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
    layout: Layout, options: MountOptions, kind: Kind, snapshot_id: int, parents: Sequence[Link]
) -> list[Mount]:
    """`parents`: nearest first. An adopted parent is never a bind (its shadows or the catalog
    hider must apply); what `lowers.stack` names must exist (`LowerPaths.ensure`)."""
    if not parents:
        mode = "ro" if kind == Kind.VIEW else "rw"
        return [Mount("bind", layout.fs_path(snapshot_id), options=(mode, "rbind"))]
    if kind == Kind.VIEW and len(parents) == 1 and not (parents[0].shadows or parents[0].source):
        return [Mount("bind", layout.fs_path(parents[0].id), options=("ro", "rbind"))]
    flags: list[str] = []
    if options.index_off:
        flags.append("index=off")
    if options.userxattr:
        flags.append("userxattr")
    if kind == Kind.ACTIVE:
        flags += [f"workdir={layout.work_path(snapshot_id)}", f"upperdir={layout.fs_path(snapshot_id)}"]
    flags.append("lowerdir=" + ":".join(layout.lowers.render(stack(parents))))
    return [Mount("overlay", "overlay", options=tuple(flags))]
