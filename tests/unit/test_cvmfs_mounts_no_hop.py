"""Mounts of a one-layer chain is answered on the event loop; only a chain that could repeat a
layer resolves its lowers (realpath, blocking), and that happens off the loop."""

from __future__ import annotations

import os
import threading

import pytest

from snapmux.adapters.cvmfs import snapshotter as module
from snapmux.adapters.cvmfs.snapshotter import CvmfsSnapshotter
from snapmux.domain.model import Mount


class FixedMounts:
    def __init__(self, mounts: list[Mount]) -> None:
        self._mounts = mounts

    async def mounts(self, key: str) -> list[Mount]:
        return self._mounts


@pytest.fixture
def resolved(monkeypatch):
    """Which threads resolved a path."""
    threads: list[threading.Thread] = []

    def realpath(path: str) -> str:
        threads.append(threading.current_thread())
        return os.path.normpath(path)

    monkeypatch.setattr(module.os.path, "realpath", realpath)
    return threads


async def test_one_lower_is_answered_on_the_loop_without_resolving(resolved):
    active = Mount("overlay", "overlay", "", ("index=off", "workdir=/r/2/work", "upperdir=/r/2/fs", "lowerdir=/r/1/fs"))
    bind = Mount("bind", "/r/3/fs", "", ("rw", "rbind"))
    answered = await CvmfsSnapshotter(FixedMounts([active, bind]), None).mounts("k")  # type: ignore[arg-type]
    assert answered == [active, bind] and all(a is b for a, b in zip(answered, [active, bind]))  # nothing rebuilt
    assert resolved == []


async def test_several_lowers_are_resolved_off_the_loop_and_repeats_dropped(resolved):
    view = Mount("overlay", "overlay", "", ("index=off", "lowerdir=/r/3/fs:/r/2/../3/fs"))
    mounts = await CvmfsSnapshotter(FixedMounts([view]), None).mounts("k")  # type: ignore[arg-type]
    assert mounts == [Mount("bind", "/r/3/fs", "", ("ro", "rbind"))]
    assert resolved and threading.main_thread() not in resolved


async def test_a_read_only_overlay_of_one_lower_is_a_read_only_bind_without_resolving(resolved):
    view = Mount("overlay", "overlay", "", ("index=off", "lowerdir=/r/3/fs"))
    assert await CvmfsSnapshotter(FixedMounts([view]), None).mounts("k") == [  # type: ignore[arg-type]
        Mount("bind", "/r/3/fs", "", ("ro", "rbind"))]
    assert resolved == []


async def test_a_mount_is_looked_at_once_per_object_and_anew_when_it_changes(monkeypatch):
    looked: list[Mount] = []
    lowerdir = module._lowerdir
    monkeypatch.setattr(module, "_lowerdir", lambda mount: looked.append(mount) or lowerdir(mount))
    view = Mount("overlay", "overlay", "", ("index=off", "lowerdir=/r/3/fs"))
    inner = FixedMounts([view])
    snapshotter = CvmfsSnapshotter(inner, None)  # type: ignore[arg-type]
    first, second = await snapshotter.mounts("k"), await snapshotter.mounts("k")
    assert first == second == [Mount("bind", "/r/3/fs", "", ("ro", "rbind"))] and looked == [view]
    changed = Mount("overlay", "overlay", "", ("index=off", "lowerdir=/r/4/fs"))
    inner._mounts = [changed]
    assert await snapshotter.mounts("k") == [Mount("bind", "/r/4/fs", "", ("ro", "rbind"))]
    assert looked == [view, changed]


async def test_several_lowers_are_resolved_on_every_call(resolved):
    """Where their paths lead may change (a layer put back): nothing of them is kept."""
    view = Mount("overlay", "overlay", "", ("index=off", "lowerdir=/r/3/fs:/r/2/fs"))
    snapshotter = CvmfsSnapshotter(FixedMounts([view]), None)  # type: ignore[arg-type]
    await snapshotter.mounts("k")
    once = len(resolved)
    await snapshotter.mounts("k")
    assert once and len(resolved) == 2 * once
