"""OverlaySnapshotter.adopt: committed snapshots whose files are a read-only directory elsewhere (CVMFS layers)."""

from __future__ import annotations

import os

import pytest

from snapmux.adapters.overlay.snapshotter import OverlaySnapshotter
from snapmux.domain.errors import AlreadyExistsError, InvalidArgumentError, NotFoundError, UnavailableError
from snapmux.domain.model import Kind, Usage


@pytest.fixture
async def snapshotter(tmp_path):
    snapshotter = await OverlaySnapshotter.open(str(tmp_path / "root"))
    yield snapshotter
    await snapshotter.close()


@pytest.fixture
def source(tmp_path):
    layer = tmp_path / "cvmfs" / "layer1"
    (layer / "etc").mkdir(parents=True)
    (layer / "etc" / "hello").write_text("from cvmfs\n")
    return layer


async def test_adopt_creates_a_committed_snapshot_linked_to_its_source(snapshotter, source):
    info = await snapshotter.adopt("layer1", "", {"cvmfs": "yes"}, str(source))
    assert (info.name, info.kind, info.parent, dict(info.labels)) == ("layer1", Kind.COMMITTED, "", {"cvmfs": "yes"})
    assert (await snapshotter.stat("layer1")).kind == Kind.COMMITTED
    assert await snapshotter.usage("layer1") == Usage(0, 0)
    [entry] = os.listdir(snapshotter.layout.snapshots_dir)
    fs = os.path.join(snapshotter.layout.snapshots_dir, entry, "fs")
    assert os.path.islink(fs) and os.readlink(fs) == str(source)


async def test_adopt_onto_a_committed_parent_and_prepare_above(snapshotter, source, tmp_path):
    await snapshotter.prepare("a")
    await snapshotter.commit("base", "a")
    await snapshotter.adopt("layer1", "base", {}, str(source))
    mounts = await snapshotter.prepare("rw", "layer1")
    [mount] = mounts
    lower = next(o for o in mount.options if o.startswith("lowerdir="))[len("lowerdir="):].split(":")
    assert all(path.startswith(snapshotter.layout.snapshots_dir + "/") for path in lower)
    assert lower[0] == snapshotter.layout.lowers.hider  # hides CVMFS's .cvmfscatalog
    assert os.path.realpath(lower[1]) == str(source)
    assert (await snapshotter.stat("rw")).parent == "layer1"


async def test_adopt_of_a_taken_name_is_already_exists(snapshotter, source):
    await snapshotter.adopt("layer1", "", {}, str(source))
    with pytest.raises(AlreadyExistsError):
        await snapshotter.adopt("layer1", "", {}, str(source))
    await snapshotter.prepare("active")
    with pytest.raises(AlreadyExistsError):
        await snapshotter.adopt("active", "", {}, str(source))
    assert len(os.listdir(snapshotter.layout.snapshots_dir)) == 2


async def test_adopt_needs_an_existing_committed_parent(snapshotter, source):
    with pytest.raises(NotFoundError):
        await snapshotter.adopt("layer1", "missing", {}, str(source))
    await snapshotter.prepare("active")
    with pytest.raises(InvalidArgumentError):
        await snapshotter.adopt("layer1", "active", {}, str(source))
    assert [i.name async for i in snapshotter.walk()] == ["active"]
    assert len(os.listdir(snapshotter.layout.snapshots_dir)) == 1


async def test_adopt_rejects_relative_missing_or_inside_root_sources(snapshotter, source, tmp_path):
    with pytest.raises(InvalidArgumentError):
        await snapshotter.adopt("x", "", {}, "relative/dir")
    with pytest.raises(InvalidArgumentError):
        await snapshotter.adopt("x", "", {}, snapshotter.layout.snapshots_dir)
    with pytest.raises(UnavailableError):
        await snapshotter.adopt("x", "", {}, str(tmp_path / "absent"))
    assert [i async for i in snapshotter.walk()] == []


async def test_a_vanished_source_makes_only_its_descendants_unavailable(snapshotter, source, tmp_path):
    await snapshotter.adopt("layer1", "", {}, str(source))
    await snapshotter.prepare("above", "layer1")
    await snapshotter.prepare("other")
    os.rename(source, tmp_path / "moved")
    for call in (lambda: snapshotter.prepare("x", "layer1"), lambda: snapshotter.view("y", "layer1"),
                 lambda: snapshotter.mounts("above")):
        with pytest.raises(UnavailableError, match="layer1"):
            await call()
    assert await snapshotter.mounts("other")
    assert {i.name async for i in snapshotter.walk()} == {"layer1", "above", "other"}


async def test_adopt_above_a_vanished_source_is_unavailable_and_adds_nothing(snapshotter, source, tmp_path):
    upper = tmp_path / "cvmfs" / "layer2"
    upper.mkdir()
    await snapshotter.adopt("layer1", "", {}, str(source))
    source.rename(tmp_path / "cvmfs" / "away")
    with pytest.raises(UnavailableError, match="layer1"):
        await snapshotter.adopt("layer2", "layer1", {}, str(upper))
    assert [info.name async for info in snapshotter.walk()] == ["layer1"]


async def test_remove_and_cleanup_unlink_without_following(snapshotter, source):
    await snapshotter.adopt("layer1", "", {}, str(source))
    await snapshotter.adopt("layer2", "layer1", {}, str(source))
    await snapshotter.remove("layer2")
    await snapshotter.remove("layer1")
    await snapshotter.cleanup()
    assert os.listdir(snapshotter.layout.snapshots_dir) == []
    assert (source / "etc" / "hello").read_text() == "from cvmfs\n"


async def test_cleanup_keeps_the_catalog_hider_while_an_adopted_layer_remains(snapshotter, source):
    await snapshotter.adopt("layer1", "", {}, str(source))
    await snapshotter.adopt("layer2", "layer1", {}, str(source))
    await snapshotter.prepare("box", "layer2")
    await snapshotter.remove("box")
    await snapshotter.remove("layer2")
    await snapshotter.cleanup()
    assert os.path.isdir(snapshotter.layout.lowers.hider)
    [mount] = await snapshotter.prepare("again", "layer1")
    assert snapshotter.layout.lowers.hider in mount.options[-1]


async def test_startup_survives_a_vanished_source(tmp_path, source):
    root = str(tmp_path / "root")
    first = await OverlaySnapshotter.open(root)
    await first.adopt("layer1", "", {}, str(source))
    await first.close()
    os.rename(source, tmp_path / "gone")
    again = await OverlaySnapshotter.open(root)
    try:
        assert (await again.stat("layer1")).kind == Kind.COMMITTED
        await again.cleanup()
        assert len(os.listdir(again.layout.snapshots_dir)) == 1
        await again.remove("layer1")
        await again.cleanup()  # waits for the background deletion remove started
        assert os.listdir(again.layout.snapshots_dir) == []
    finally:
        await again.close()
    assert (tmp_path / "gone" / "etc" / "hello").exists()


# -- adopted with whiteout shadows (foreign CVMFS layers) ------------------------------------------


@pytest.fixture
def shadows(tmp_path):
    shadows = tmp_path / "root" / "whiteouts" / ("ab" * 32)
    for tree in ("upper", "lower"):
        (shadows / tree / "etc").mkdir(parents=True)
    (shadows / "lower" / "etc" / "keep").write_text("shadow")
    return shadows


def lowers(mount):
    return next(o for o in mount.options if o.startswith("lowerdir="))[len("lowerdir="):].split(":")


async def test_adopted_shadows_mount_around_the_source_and_survive_a_restart(tmp_path, source, shadows):
    snapshotter = await OverlaySnapshotter.open(str(tmp_path / "root"))
    try:
        await snapshotter.adopt("plain", "", {}, str(source))
        await snapshotter.adopt("foreign", "plain", {}, str(source), str(shadows))
        [mount] = await snapshotter.prepare("rw", "foreign")
    finally:
        await snapshotter.close()
    expected = [tmp_path / "root" / "snapshots" / "hide", shadows / "upper", source, shadows / "lower", source]
    assert [os.path.realpath(p) for p in lowers(mount)] == [str(p) for p in expected]
    assert all(path.startswith(snapshotter.layout.snapshots_dir + "/") for path in lowers(mount))
    again = await OverlaySnapshotter.open(str(tmp_path / "root"))  # the shadows are in the metadata
    try:
        assert (await again.mounts("rw")) == [mount]
    finally:
        await again.close()


async def test_vanished_shadows_make_only_their_descendants_unavailable(snapshotter, source, shadows):
    await snapshotter.adopt("foreign", "", {}, str(source), str(shadows))
    await snapshotter.prepare("above", "foreign")
    await snapshotter.adopt("plain", "", {}, str(source))
    (shadows / "lower" / "etc" / "keep").unlink()
    for tree in ("lower/etc", "lower"):
        (shadows / tree).rmdir()
    with pytest.raises(UnavailableError, match="whiteout shadows"):
        await snapshotter.mounts("above")
    with pytest.raises(UnavailableError, match="whiteout shadows"):
        await snapshotter.adopt("again", "", {}, str(source), str(shadows))
    assert await snapshotter.prepare("other", "plain")


async def test_remove_and_cleanup_never_follow_into_the_shadows(snapshotter, source, shadows):
    await snapshotter.adopt("foreign", "", {}, str(source), str(shadows))
    await snapshotter.remove("foreign")
    await snapshotter.cleanup()
    assert os.listdir(snapshotter.layout.snapshots_dir) == []
    assert (shadows / "lower" / "etc" / "keep").read_text() == "shadow"


def test_a_root_from_before_shadows_gains_the_column(tmp_path):
    import sqlite3

    from snapmux.adapters.overlay.sqlite_store import SqliteMetadataStore

    path = str(tmp_path / "metadata.db")
    old = sqlite3.connect(path)
    old.executescript("""CREATE TABLE snapshots (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE,
        kind INTEGER NOT NULL, parent_id INTEGER REFERENCES snapshots(id) ON DELETE RESTRICT, labels TEXT NOT NULL,
        created TEXT NOT NULL, updated TEXT NOT NULL, size INTEGER NOT NULL DEFAULT 0,
        inodes INTEGER NOT NULL DEFAULT 0, source TEXT NOT NULL DEFAULT '');
        INSERT INTO snapshots (name, kind, labels, created, updated, source)
        VALUES ('layer1', 3, '{}', '2026-01-01T00:00:00+00:00', '2026-01-01T00:00:00+00:00', '/cvmfs/x');""")
    old.close()
    store = SqliteMetadataStore(path)
    try:
        [row] = list(store.query().rows())
        assert (row.info.name, row.source, row.shadows) == ("layer1", "/cvmfs/x", "")
    finally:
        store.close()


async def adopt_shadowed_layers(snapshotter, tmp_path, count: int) -> None:
    """layer0 .. layer<count-1>, each over the one before, each with whiteout shadows: adjacent
    shadows, so the chain's mounts need merged trees (built on the read pool)."""
    parent = ""
    for n in range(count):
        layer = tmp_path / "cvmfs" / f"layer{n}"
        (layer / "data").mkdir(parents=True)
        for tree in ("upper", "lower"):
            (tmp_path / "cvmfs" / f"layer{n}-shadows" / tree / "data").mkdir(parents=True)
        await snapshotter.adopt(f"layer{n}", parent, {}, str(layer), f"{layer}-shadows")
        parent = f"layer{n}"


async def test_a_parent_removed_while_its_whiteout_trees_are_built_is_not_found(snapshotter, tmp_path):
    """Prepare builds the parent chain's merged shadows on the read pool before its write; a remove
    of that parent in between is the caller's NotFound, not an internal error."""
    await adopt_shadowed_layers(snapshotter, tmp_path, 2)
    build = snapshotter._built

    async def removed_meanwhile(chain, *watched):
        await snapshotter.remove("layer1")
        return await build(chain, *watched)

    snapshotter._built = removed_meanwhile
    with pytest.raises(NotFoundError):
        await snapshotter.prepare("rw", "layer1")
    snapshotter._built = build
    assert [info.name async for info in snapshotter.walk()] == ["layer0"]


async def test_a_source_that_vanishes_after_mounts_answered_is_still_noticed(snapshotter, source, tmp_path):
    """Mounts are planned once per snapshot, but adopted sources are looked at on every call."""
    await snapshotter.adopt("layer1", "", {}, str(source))
    await snapshotter.prepare("above", "layer1")
    assert await snapshotter.mounts("above")
    os.rename(source, tmp_path / "moved")
    with pytest.raises(UnavailableError, match="layer1"):
        await snapshotter.mounts("above")
    os.rename(tmp_path / "moved", source)
    assert await snapshotter.mounts("above")


async def test_a_view_removed_with_its_parent_while_mounts_builds_their_trees_is_not_found(snapshotter, tmp_path):
    """Mounts looks at the chain's adopted sources and builds its trees on the read pool; a view
    removed meanwhile, and its parent after it (whose merged shadows Mounts then rebuilds in a
    directory that is gone), is the caller's NotFound, not an internal error."""
    await adopt_shadowed_layers(snapshotter, tmp_path, 3)
    await snapshotter.view("v", "layer2")
    read = snapshotter._read

    async def removed_meanwhile(function, *args):
        if function == snapshotter._check_and_build:
            snapshotter._read = read
            for key in ("v", "layer2", "layer1"):
                await snapshotter.remove(key)
            await snapshotter._reclaim.settle()  # their directories are gone
        return await read(function, *args)

    snapshotter._read = removed_meanwhile
    with pytest.raises(NotFoundError, match="snapshot v: not found"):
        await snapshotter.mounts("v")
    assert [info.name async for info in snapshotter.walk()] == ["layer0"]
