"""Crash consistency of OverlaySnapshotter: kill -9 at every step and at random, then reopen and check.

A child process (this module run with `python -m`) drives a seeded random
workload. In the step-by-step test it exits abruptly (`os._exit`, no cleanup,
like kill -9) at the N-th filesystem or metadata step, for every N; in the
random test the parent SIGKILLs it at seeded random times. After each crash:
every row has its directory, parents exist and are committed, SQLite is intact,
Cleanup leaves exactly the owned directories, adopted sources are untouched,
and the store still works.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from snapmux.adapters.overlay.layout import Layout
from snapmux.adapters.overlay.mounts import MountOptions
from snapmux.adapters.overlay.reserve import RESERVED
from snapmux.adapters.overlay.snapshotter import OverlaySnapshotter
from snapmux.adapters.overlay.sqlite_store import SqliteMetadataStore
from snapmux.domain.errors import DomainError
from snapmux.domain.model import Info, Kind

REPO = Path(__file__).resolve().parents[2]


class Steps:
    """Counts crash points; exits the process without any cleanup at the chosen one."""

    def __init__(self, exit_at: int) -> None:
        self.count, self.exit_at = 0, exit_at

    def __call__(self) -> None:
        self.count += 1
        if self.count == self.exit_at:
            os._exit(9)


class CrashingLayout(Layout):
    def __init__(self, root: str, steps: Steps) -> None:
        super().__init__(root)
        self.steps = steps

    def build(self, with_work, owner=None):  # type: ignore[no-untyped-def]
        self.steps()
        staged = super().build(with_work, owner)
        self.steps()
        return staged

    def build_link(self, source, shadows=""):  # type: ignore[no-untyped-def]
        staged = super().build_link(source, shadows)
        self.steps()
        return staged

    def install(self, staged, snapshot_id):  # type: ignore[no-untyped-def]
        self.steps()
        super().install(staged, snapshot_id)
        self.steps()

    def set_aside(self, path, aside=None):  # type: ignore[no-untyped-def]
        self.steps()
        aside = super().set_aside(path, aside)
        self.steps()
        return aside


class CrashingStore(SqliteMetadataStore):
    def __init__(self, path: str, steps: Steps) -> None:
        self.steps = steps
        super().__init__(path)

    @contextlib.contextmanager
    def transaction(self, write=False):  # type: ignore[no-untyped-def]
        with super().transaction(write) as tx:
            yield tx
            if write:
                self.steps()  # changes made, COMMIT not yet issued
        if write:
            self.steps()


async def workload(snapshotter: OverlaySnapshotter, rng: random.Random, sources: list[str], ops: int) -> None:
    for i in range(ops):
        infos = [info async for info in snapshotter.walk()]
        committed = [x.name for x in infos if x.kind == Kind.COMMITTED]
        active = [x.name for x in infos if x.kind == Kind.ACTIVE]
        parents = {x.parent for x in infos}
        leaves = [x.name for x in infos if x.name not in parents]
        op = rng.choice(["prepare", "prepare", "commit", "view", "remove", "adopt", "update", "cleanup"])
        parent = rng.choice(committed + [""]) if committed else ""
        with contextlib.suppress(DomainError):
            if op == "prepare":
                mounts = await snapshotter.prepare(f"k{i}", parent)
                fs = next((m.source for m in mounts if m.type == "bind"), None)
                if fs:
                    Path(fs, f"file{i}").write_text("x" * rng.randrange(1, 9000))
            elif op == "commit" and active:
                await snapshotter.commit(f"c{i}", rng.choice(active), {"i": str(i)})
            elif op == "view":
                await snapshotter.view(f"v{i}", parent)
            elif op == "remove" and leaves:
                await snapshotter.remove(rng.choice(leaves))
            elif op == "adopt":
                source = rng.choice(sources)
                await snapshotter.adopt(f"a{i}", parent, {"adopted": "1"}, source, rng.choice(["", shadows_of(source)]))
            elif op == "update" and infos:
                await snapshotter.update(Info(rng.choice(infos).name, Kind.UNKNOWN, labels={"u": str(i)}), ["labels.u"])
            elif op == "cleanup":
                await snapshotter.cleanup()


async def child(root: str, sources: list[str], seed: int, exit_at: int, ops: int, reserve: int) -> None:
    """`reserve`: directories reserved ahead by a background thread, whose steps make the count
    nondeterministic, so only the random kills use it."""
    steps = Steps(exit_at)
    layout = CrashingLayout(root, steps)
    layout.create_root()
    snapshotter = OverlaySnapshotter(layout, CrashingStore(layout.metadata_path, steps), MountOptions.detect(), reserve)
    print("ready", flush=True)
    await workload(snapshotter, random.Random(seed), sources, ops)
    await snapshotter.close()
    print(f"steps {steps.count}", flush=True)


def spawn(root: Path, sources: list[str], seed: int, exit_at: int, ops: int, reserve: int = 0) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "tests.unit.test_overlay_crash", str(root), str(seed), str(exit_at), str(ops),
            str(reserve), *sources]
    return subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, text=True)


def shadows_of(source: str) -> str:
    """Whiteout shadows beside each adopted source: adopted with some, never touched by deletion."""
    return source + "-shadows"


def make_sources(tmp_path: Path) -> list[str]:
    sources = []
    for n in range(2):
        layer = tmp_path / "cvmfs" / f"layer{n}"
        (layer / "data").mkdir(parents=True)
        (layer / "data" / "keep").write_text("cvmfs")
        for tree in ("upper", "lower"):
            Path(shadows_of(str(layer)), tree, "data").mkdir(parents=True)
        sources.append(str(layer))
    return sources


def check_invariants(root: Path, sources: list[str]) -> None:
    layout = Layout(str(root))
    store = SqliteMetadataStore(layout.metadata_path)
    try:
        assert store._connection().execute("PRAGMA integrity_check").fetchone() == ("ok",)
        with store.transaction() as tx:
            rows = {row.info.name: row for row in tx.rows()}
    finally:
        store.close()
    for row in rows.values():
        fs = layout.fs_path(row.id)
        if row.source:
            assert os.path.islink(fs) and os.readlink(fs) == row.source, row
            for link, tree in ((layout.wh_upper_path(row.id), "upper"), (layout.wh_lower_path(row.id), "lower")):
                assert os.path.islink(link) == bool(row.shadows), row
                assert not row.shadows or os.readlink(link) == os.path.join(row.shadows, tree), row
        else:
            assert os.path.isdir(fs) and not os.path.islink(fs), row
        if row.info.kind == Kind.ACTIVE:
            assert os.path.isdir(layout.work_path(row.id)), row
        if row.info.parent:
            assert rows[row.info.parent].info.kind == Kind.COMMITTED, row
    asyncio.run(_reopen_and_clean(root, {str(row.id) for row in rows.values()}))
    for source in sources:
        assert Path(source, "data", "keep").read_text() == "cvmfs"
        assert all(Path(shadows_of(source), tree, "data").is_dir() for tree in ("upper", "lower"))


async def _reopen_and_clean(root: Path, owned: set[str]) -> None:
    snapshotter = await OverlaySnapshotter.open(str(root))
    try:
        await snapshotter.cleanup()
        assert set(snapshotter.layout.entries()) == owned  # the shared catalog hider aside
        await snapshotter.prepare("after-crash")
        await snapshotter.commit("after-crash-committed", "after-crash")
        await snapshotter.remove("after-crash-committed")
        await snapshotter.cleanup()
        assert set(snapshotter.layout.entries()) == owned  # the shared catalog hider aside
    finally:
        await snapshotter.close()


def test_exit_at_every_step_leaves_a_consistent_store(tmp_path):
    sources, ops, seed = make_sources(tmp_path), 14, 7
    full = spawn(tmp_path / "full", sources, seed, 0, ops)
    total = int(full.communicate(timeout=120)[0].split()[-1])
    assert full.returncode == 0 and total > 20
    for exit_at in range(1, total + 1):
        root = tmp_path / f"crash-{exit_at}"
        crashed = spawn(root, sources, seed, exit_at, ops)
        crashed.communicate(timeout=120)
        assert crashed.returncode == 9, f"step {exit_at} of {total} was not reached"
        check_invariants(root, sources)


@pytest.mark.parametrize("reserve", [0, RESERVED])
def test_random_kill_9_leaves_a_consistent_store(tmp_path, reserve):
    sources, rng, root = make_sources(tmp_path), random.Random(20261123), tmp_path / "root"
    for round_ in range(6):
        process = spawn(root, sources, round_, 0, 400, reserve)
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        try:
            process.wait(timeout=rng.uniform(0.05, 0.6))
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
        process.communicate(timeout=60)
        check_invariants(root, sources)


@pytest.mark.parametrize("reserve", [0, RESERVED])
async def test_concurrent_batched_writes_keep_the_cache_equal_to_the_store(tmp_path, reserve):
    """Group commit and the in-memory mirror: after concurrent workloads, reads equal what SQLite holds."""
    sources = make_sources(tmp_path)
    snapshotter = await OverlaySnapshotter.open(str(tmp_path / "root"), reserve=reserve)
    try:
        await asyncio.gather(*(workload(snapshotter, random.Random(seed), sources, 60) for seed in range(6)))
        cached = {info.name: info async for info in snapshotter.walk()}
        with snapshotter._store.transaction() as tx:
            stored = {row.info.name: row.info for row in tx.rows()}
        assert cached == stored and len(stored) > 5
    finally:
        await snapshotter.close()
    await asyncio.to_thread(check_invariants, tmp_path / "root", sources)


if __name__ == "__main__":
    root_arg, seed_arg, exit_arg, ops_arg, reserve_arg, *source_args = sys.argv[1:]
    asyncio.run(child(root_arg, source_args, int(seed_arg), int(exit_arg), int(ops_arg), int(reserve_arg)))
