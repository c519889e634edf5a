"""A chain deeper than overlayfs stacks is refused by name at Prepare, before anything is written,
instead of answering mounts the kernel refuses with a bare EINVAL when containerd mounts them."""

from __future__ import annotations

import os

import pytest

from snapmux.adapters.overlay.lowers import OVERLAYFS_MAX_STACK, stack
from snapmux.adapters.overlay.snapshotter import OverlaySnapshotter
from snapmux.adapters.overlay.sqlite_store import Link
from snapmux.domain.errors import FailedPreconditionError, NotFoundError


def plain_chain(depth: int) -> list[Link]:
    return [Link(depth - index, f"layer-{depth - index}", "") for index in range(depth)]


def test_a_stack_of_exactly_the_kernels_limit_is_planned():
    assert len(stack(plain_chain(OVERLAYFS_MAX_STACK))) == OVERLAYFS_MAX_STACK == 500


def test_one_lower_more_is_refused_naming_both_counts():
    with pytest.raises(FailedPreconditionError, match="chain of 501 snapshots needs 501 lower directories; overlayfs"
                                                      " stacks at most 500"):
        stack(plain_chain(OVERLAYFS_MAX_STACK + 1))


def test_a_flattened_chain_ends_the_stack_whatever_lies_below():
    deep = plain_chain(OVERLAYFS_MAX_STACK + 10)
    deep[3] = Link(deep[3].id, deep[3].name, "/cvmfs/chain", flat=True)
    assert len(stack(deep)) == 1 + 4  # the catalog hider and the four down to the chain


async def test_prepare_above_too_deep_a_chain_fails_and_writes_nothing(tmp_path):
    source = tmp_path / "layerfs"
    source.mkdir()
    snapshotter = await OverlaySnapshotter.open(str(tmp_path / "root"))
    try:
        parent = ""
        for index in range(OVERLAYFS_MAX_STACK - 1):  # adopted layers add the catalog hider: 500 lowers
            await snapshotter.adopt(f"layer-{index}", parent, {}, str(source))
            parent = f"layer-{index}"
        [mount] = await snapshotter.prepare("fits", parent)
        assert mount.options[-1].count(":") == OVERLAYFS_MAX_STACK - 1
        await snapshotter.adopt("one-too-many", parent, {}, str(source))
        entries = sorted(os.listdir(snapshotter.layout.snapshots_dir))
        with pytest.raises(FailedPreconditionError, match="needs 501 lower directories"):
            await snapshotter.prepare("too-deep", "one-too-many")
        with pytest.raises(NotFoundError):
            await snapshotter.stat("too-deep")
        assert sorted(os.listdir(snapshotter.layout.snapshots_dir)) == entries
    finally:
        await snapshotter.close()
