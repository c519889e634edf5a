"""CvmfsSnapshotter over an adopting in-memory fake: the remote signal, fallback, availability."""

from __future__ import annotations

import os

import pytest

from snapmux.adapters.cvmfs.layers import CvmfsLayerStore
from snapmux.adapters.cvmfs.snapshotter import CvmfsSnapshotter
from snapmux.adapters.cvmfs.whiteout_names import PUBLISHED_MARKER
from snapmux.domain.errors import AlreadyExistsError, InvalidArgumentError, NotFoundError, UnavailableError
from snapmux.domain.labels import CRI_DIGEST_LABEL, REF_LABEL, REMOTE_LABEL, STARGZ_DIGEST_LABEL
from snapmux.domain.model import Info, Kind
from tests.contract.snapshot_service import SnapshotServiceContract, listed
from tests.fakes.cvmfs_outcomes import OutcomeSpy
from tests.fakes.snapshots import InMemorySnapshotService, _Snapshot

A, B, C = ("a" * 64, "b" * 64, "c" * 64)


class AdoptingFake(InMemorySnapshotService):
    """The core's `adopt` contract in memory; `<root>/<id>/fs` is a real symlink to the source."""

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.adopted: dict[str, str] = {}
        self.shadows: dict[str, str] = {}
        self.flattened: set[str] = set()

    def _check_sources(self, name):
        """As the core does: every adopted layer from `name` down must still be a directory."""
        while name in self._snapshots:
            source = self.adopted.get(name)
            if source is not None and not os.path.isdir(source):
                raise UnavailableError(f"snapshot {name!r}: adopted source {source} is not available")
            name = self._snapshots[name].info.parent

    async def prepare(self, key, parent="", labels=None):
        self._check_sources(parent)
        return await super().prepare(key, parent, labels)

    async def view(self, key, parent="", labels=None):
        self._check_sources(parent)
        return await super().view(key, parent, labels)

    async def mounts(self, key):
        self._check_sources(self._get(key).info.parent)
        return await super().mounts(key)

    async def adopt(self, name, parent, labels, source, shadows="", flattened=False):
        self._check_sources(parent)
        async with self._lock:
            if parent and self._get(parent).info.kind != Kind.COMMITTED:
                raise InvalidArgumentError(f"parent {parent!r} is not committed")
            if name in self._snapshots:
                raise AlreadyExistsError(f"snapshot {name}: already exists")
            snap = _Snapshot(self._next_id, Info(name, Kind.COMMITTED, parent, dict(labels)))
            self._next_id += 1
            os.makedirs(f"{self.root}/{snap.id}")
            os.symlink(source, f"{self.root}/{snap.id}/fs")
            self._snapshots[name] = snap
            self.adopted[name] = source
            self.shadows[name] = shadows
            if flattened:
                self.flattened.add(name)
            return snap.info


def publish(base, hex_digest):
    layer = base / ".layers" / hex_digest[:2] / hex_digest
    (layer / "layerfs").mkdir(parents=True)
    (layer / PUBLISHED_MARKER).write_text("{}")
    return str(layer / "layerfs")


def unpack_labels(target, hex_digest, label=CRI_DIGEST_LABEL):
    return {REF_LABEL: target, label: f"sha256:{hex_digest}"}


@pytest.fixture
def layout(tmp_path):
    (tmp_path / "layout").mkdir()
    return tmp_path / "layout"


@pytest.fixture
def fake(tmp_path):
    return AdoptingFake(str(tmp_path / "root"))


@pytest.fixture
def counted(fake):
    return OutcomeSpy(fake)


@pytest.fixture
def cvmfs(counted, layout):
    return CvmfsSnapshotter(counted, CvmfsLayerStore(str(layout)))


async def unpack(cvmfs, target, parent, hex_digest, label=CRI_DIGEST_LABEL):
    """What containerd's unpacker does: Prepare with the ref label, commit if not remote."""
    try:
        await cvmfs.prepare(f"extract-{target}", parent, unpack_labels(target, hex_digest, label))
    except AlreadyExistsError:
        return "remote"
    await cvmfs.commit(target, f"extract-{target}", {REF_LABEL: target})
    return "local"


class TestDecoratorKeepsTheContract(SnapshotServiceContract):
    @pytest.fixture
    async def snapshots(self, cvmfs):
        return cvmfs


async def test_available_layer_is_adopted_and_signalled_as_already_exists(cvmfs, fake, counted, layout):
    source = publish(layout, A)
    with pytest.raises(AlreadyExistsError):
        await cvmfs.prepare("extract-1", "", unpack_labels("chain-a", A))
    info = await cvmfs.stat("chain-a")
    assert (info.kind, info.parent, info.labels[REMOTE_LABEL], info.labels[REF_LABEL]) == (
        Kind.COMMITTED, "", "true", "chain-a")
    assert fake.adopted == {"chain-a": source}
    with pytest.raises(NotFoundError):
        await cvmfs.stat("extract-1")
    found = await listed(cvmfs, f'labels."{REF_LABEL}"==chain-a,parent==""')
    assert list(found) == ["chain-a"]
    assert counted.counters.remote == 1


async def test_stargz_digest_label_works_too(cvmfs, layout):
    publish(layout, A)
    assert await unpack(cvmfs, "chain-a", "", A, STARGZ_DIGEST_LABEL) == "remote"


async def test_missing_layer_falls_back_and_the_layer_above_is_still_remote(cvmfs, fake, counted, layout):
    publish(layout, A)
    publish(layout, C)
    assert await unpack(cvmfs, "c1", "", A) == "remote"
    assert await unpack(cvmfs, "c2", "c1", B) == "local"
    assert await unpack(cvmfs, "c3", "c2", C) == "remote"
    assert (await cvmfs.stat("c3")).parent == "c2"
    assert counted.counters.fallback == 1 and counted.counters.remote == 2
    mounts = await cvmfs.prepare("container", "c3")
    lowers = dict(o.split("=", 1) for o in mounts[0].options)["lowerdir"].split(":")
    assert [os.path.realpath(p) for p in lowers][0] == os.path.realpath(fake.adopted["c3"])
    assert len(lowers) == 3


async def test_no_ref_label_is_the_normal_local_path(cvmfs, fake, layout):
    publish(layout, A)
    mounts = await cvmfs.prepare("k", "", {CRI_DIGEST_LABEL: f"sha256:{A}"})
    assert mounts and fake.adopted == {}


async def test_malformed_digest_is_invalid_argument_and_creates_nothing(cvmfs, fake):
    with pytest.raises(InvalidArgumentError):
        await cvmfs.prepare("k", "", {REF_LABEL: "t", CRI_DIGEST_LABEL: "sha256:../../etc"})
    assert [i async for i in cvmfs.walk()] == [] and fake.adopted == {}


async def test_same_digest_twice_in_one_chain(cvmfs, fake, layout):
    publish(layout, A)
    publish(layout, B)
    for target, parent, digest in (("c1", "", A), ("c2", "c1", B), ("c3", "c2", A)):
        assert await unpack(cvmfs, target, parent, digest) == "remote"
    mounts = await cvmfs.view("v", "c3")
    lowers = dict(o.split("=", 1) for o in mounts[0].options)["lowerdir"].split(":")
    reals = [os.path.realpath(p) for p in lowers]
    assert reals == [os.path.realpath(publish_path(layout, A)), os.path.realpath(publish_path(layout, B))]


def publish_path(layout, hex_digest):
    return str(layout / ".layers" / hex_digest[:2] / hex_digest / "layerfs")


async def test_view_of_a_single_remote_layer_is_a_read_only_bind(cvmfs, layout):
    publish(layout, A)
    await unpack(cvmfs, "c1", "", A)
    (mount,) = await cvmfs.view("v", "c1")
    assert mount.type == "bind" and "ro" in mount.options
    assert os.path.realpath(mount.source) == os.path.realpath(publish_path(layout, A))


async def test_repeated_unpack_of_an_adopted_target_still_signals_remote(cvmfs, layout):
    publish(layout, A)
    assert await unpack(cvmfs, "c1", "", A) == "remote"
    assert await unpack(cvmfs, "c1", "", A) == "remote"


async def test_vanished_layer_is_unavailable_only_for_its_own_snapshots(cvmfs, layout):
    publish(layout, A)
    publish(layout, B)
    await unpack(cvmfs, "a1", "", A)
    await unpack(cvmfs, "b1", "", B)
    await cvmfs.prepare("on-a", "a1")
    await cvmfs.prepare("on-b", "b1")
    os.rmdir(publish_path(layout, A))
    for call in (lambda: cvmfs.mounts("on-a"), lambda: cvmfs.prepare("x", "a1"), lambda: cvmfs.view("y", "a1")):
        with pytest.raises(UnavailableError):
            await call()
    assert (await cvmfs.mounts("on-b"))[0].type == "overlay"
    report = await cvmfs.restore()
    assert (report.available, report.unavailable) == (1, ("a1",))
    assert {i.name async for i in cvmfs.walk()} == {"a1", "b1", "on-a", "on-b"}


async def test_vanished_layer_is_not_adopted_again(cvmfs, fake, layout):
    assert await unpack(cvmfs, "c1", "", A) == "local"
    assert fake.adopted == {}


async def test_each_layer_takes_one_path_in_order(fake, layout):
    counted = OutcomeSpy(fake)
    events = counted.events
    cvmfs = CvmfsSnapshotter(counted, CvmfsLayerStore(str(layout)))
    publish(layout, A)
    await unpack(cvmfs, "c1", "", A)
    await unpack(cvmfs, "c2", "c1", B)
    assert events == ["remote", "fallback"]


async def test_layer_vanishing_during_adopt_falls_back(fake, layout):
    class VanishingFake(AdoptingFake):
        async def adopt(self, name, parent, labels, source, shadows="", flattened=False):
            raise UnavailableError(f"adopted source {source} is not an available directory")

    counted = OutcomeSpy(VanishingFake(fake.root))
    cvmfs = CvmfsSnapshotter(counted, CvmfsLayerStore(str(layout)))
    publish(layout, A)
    assert await unpack(cvmfs, "c1", "", A) == "local"
    assert (counted.counters.remote, counted.counters.fallback) == (0, 1)


async def test_remote_prepare_never_lists_the_layer(cvmfs, layout, monkeypatch):
    """O(1) in the layer's size: no directory of the layer is ever listed on this path."""
    source = publish(layout, A)
    for number in range(50):
        open(os.path.join(source, f"f{number}"), "w").close()

    def no_listing(*args, **kwargs):
        raise AssertionError(f"listed a directory: {args}")

    for name in ("scandir", "listdir", "walk"):
        monkeypatch.setattr(os, name, no_listing)
    assert await unpack(cvmfs, "c1", "", A) == "remote"
    assert (await cvmfs.view("v", "c1"))[0].type == "bind"


async def test_a_backend_key_keeps_its_namespace_prefix_on_the_adopted_layer(cvmfs, fake, layout):
    """containerd records the Walk match's name as the layer's key: it must route (demux) by namespace."""
    publish(layout, A)
    publish(layout, B)
    with pytest.raises(AlreadyExistsError):
        await cvmfs.prepare("vm-a/3/extract-1 sha256:x", "", unpack_labels("chain-a", A))
    with pytest.raises(AlreadyExistsError):
        await cvmfs.prepare("vm-a/4/extract-2", "vm-a/3/chain-a", unpack_labels("chain-b", B))
    found = await listed(cvmfs, f'labels."{REF_LABEL}"==chain-b,parent=="vm-a/3/chain-a"')
    assert list(found) == ["vm-a/4/chain-b"]
    assert (await cvmfs.stat("vm-a/3/chain-a")).labels[REF_LABEL] == "chain-a"


async def test_two_namespaces_on_one_snapshotter_each_get_their_own_layer(cvmfs, fake, layout):
    """GC in one namespace removes its own backend key, never the one the other namespace uses."""
    publish(layout, A)
    for key in ("ns-one/1/extract", "ns-two/1/extract"):
        with pytest.raises(AlreadyExistsError):
            await cvmfs.prepare(key, "", unpack_labels("chain-a", A))
    assert set(fake.adopted) == {"ns-one/1/chain-a", "ns-two/1/chain-a"}
    await cvmfs.remove("ns-one/1/chain-a")
    assert (await cvmfs.stat("ns-two/1/chain-a")).labels[REMOTE_LABEL] == "true"


@pytest.mark.parametrize("key", ["extract-1", "vm-a/extract", "vm-a/x1/extract", "Bad_Ns!/1/extract", "/1/extract",
                                 "vm-a/1/"])
async def test_other_key_shapes_adopt_the_plain_target(cvmfs, fake, layout, key):
    publish(layout, A)
    with pytest.raises(AlreadyExistsError):
        await cvmfs.prepare(key, "", unpack_labels("chain-a", A))
    assert list(fake.adopted) == ["chain-a"]
