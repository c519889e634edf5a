"""The first pull of foreign layers: a scan within the budget serves the layer at once, an
over-budget scan falls back and finishes for next time, the image's other layers are scanned
ahead, DUCC chains are served flattened with no scan, and each outcome is counted."""

from __future__ import annotations

import hashlib
import os
import threading

import pytest

from snapmux.adapters.cvmfs.chains import chain_dir, chain_ids, dirty_flag, next_chain_id
from snapmux.adapters.cvmfs.layers import (
    CRI_DIGEST_LABEL,
    CRI_IMAGE_LAYERS_LABEL,
    STARGZ_DIGEST_LABEL,
    STARGZ_IMAGE_LAYERS_LABEL,
    CvmfsLayerStore,
    image_layers_from_labels,
)
from snapmux.adapters.cvmfs.snapshotter import CHAIN_LABEL, REF_LABEL, CvmfsSnapshotter
from snapmux.adapters.cvmfs.whiteouts import ShadowCache
from snapmux.domain import metrics as m
from snapmux.domain.errors import AlreadyExistsError
from tests.fakes.metrics import InMemoryMetricsRegistry
from tests.support.scans import CountingScanner, scans_done
from tests.unit.test_cvmfs_snapshotter import AdoptingFake
from tests.unit.test_cvmfs_whiteouts import foreign_layer

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="0/0 char devices and trusted.* xattrs need root")

A, B, C = ("a" * 64, "b" * 64, "c" * 64)


def labels(target, hex_digest, ahead=(), digest_label=CRI_DIGEST_LABEL, layers_label=CRI_IMAGE_LAYERS_LABEL):
    found = {REF_LABEL: target, digest_label: f"sha256:{hex_digest}"}
    if ahead:
        found[layers_label] = ",".join(f"sha256:{h}" for h in ahead)
    return found


@pytest.fixture
async def world(tmp_path):
    """A foreign layout, a scanner on its own threads, and the snapshotter over an adopting fake."""
    cache = ShadowCache(str(tmp_path / "root"), userxattr=False)
    scanner = CountingScanner(cache)
    fake = AdoptingFake(str(tmp_path / "fake"))
    metrics = InMemoryMetricsRegistry()

    def open_one(budget=30.0):
        store = CvmfsLayerStore(str(tmp_path / "layout"), "scan", scanner, budget)
        return CvmfsSnapshotter(fake, store, metrics=metrics)

    yield open_one, scanner, fake, metrics, tmp_path / "layout"
    await scanner.close()


def outcomes(metrics):
    return {dict(labels_)["outcome"]: value for (name, labels_), value in metrics.samples.items()
            if name == m.FOREIGN_LAYER_PREPARES.name}


def layerfs(base, hex_digest):
    return str(base / ".layers" / hex_digest[:2] / hex_digest / "layerfs")


@needs_root
async def test_a_scan_within_the_budget_serves_the_first_prepare_in_place(world):
    open_one, scanner, fake, metrics, base = world
    foreign_layer(base, A, ["etc/.wh.gone", ".cvmfscatalog"])
    cvmfs = open_one()
    with pytest.raises(AlreadyExistsError):
        await cvmfs.prepare("k1", "", labels("c1", A))
    assert fake.adopted == {"c1": layerfs(base, A)} and fake.shadows == {"c1": scanner.cache.path(A)}
    assert outcomes(metrics) == {"scan-in-budget": 1} and scanner.started == 1


@needs_root
async def test_an_over_budget_scan_falls_back_finishes_and_serves_the_next_pull(world, monkeypatch):
    open_one, scanner, fake, metrics, base = world
    foreign_layer(base, A, ["etc/.wh.gone"])
    release, build = threading.Event(), scanner.cache.build
    monkeypatch.setattr(scanner.cache, "build", lambda *args: (release.wait(30), build(*args))[1])
    cvmfs = open_one(budget=0.05)
    try:
        assert await cvmfs.prepare("k1", "", labels("c1", A))  # fell back: containerd downloads it
        assert fake.adopted == {} and list(scanner.scans) == [A]
    finally:
        release.set()
    await scans_done(scanner)
    with pytest.raises(AlreadyExistsError):
        await open_one(budget=0.05).prepare("k2", "", labels("c1b", A))  # e.g. after a restart
    assert outcomes(metrics) == {"scan-over-budget": 1, "scanned": 1} and scanner.started == 1


async def test_a_failed_scan_falls_back_and_says_so(world, monkeypatch):
    open_one, scanner, fake, metrics, base = world
    foreign_layer(base, A, ["etc/hosts"])
    monkeypatch.setattr(scanner.cache, "build", lambda *_: (_ for _ in ()).throw(OSError("EIO on CVMFS")))
    assert await open_one().prepare("k1", "", labels("c1", A))
    assert outcomes(metrics) == {"scan-failed": 1} and fake.adopted == {}


@needs_root
@pytest.mark.parametrize("digest_label, layers_label", [(CRI_DIGEST_LABEL, CRI_IMAGE_LAYERS_LABEL),
                                                        (STARGZ_DIGEST_LABEL, STARGZ_IMAGE_LAYERS_LABEL)])
async def test_the_first_prepare_scans_the_other_layers_ahead_once(world, monkeypatch, digest_label, layers_label):
    open_one, scanner, fake, metrics, base = world
    for hex_digest in (A, B, C):
        foreign_layer(base, hex_digest, [f"{hex_digest[0]}/.wh.x"])
    cvmfs = open_one()
    with pytest.raises(AlreadyExistsError):
        await cvmfs.prepare("k1", "", labels("c1", A, (A, B, C), digest_label, layers_label))
    await scans_done(scanner)
    assert scanner.started == 3 and all(scanner.lookup(h) for h in (B, C))
    with pytest.raises(AlreadyExistsError):
        await cvmfs.prepare("k2", "c1", labels("c2", B, (B, C), digest_label, layers_label))
    with pytest.raises(AlreadyExistsError):
        await cvmfs.prepare("k3", "c2", labels("c3", C, (C,), digest_label, layers_label))
    assert scanner.started == 3 and outcomes(metrics) == {"scan-in-budget": 1, "scanned": 2}


def test_the_image_layers_label_is_a_hint_bad_entries_are_skipped():
    found = image_layers_from_labels({CRI_IMAGE_LAYERS_LABEL: f"sha256:{A}, junk,sha256:{B},sha256:{A}",
                                      STARGZ_IMAGE_LAYERS_LABEL: f"sha256:{C},../x"})
    assert found == [A, B, C]
    assert image_layers_from_labels(None) == []


def test_chain_ids_follow_duccs_scheme():
    """DUCC's GenerateChainFromManifest: the first id is the layer digest, then sha256 of
    "<previous hex> <layer hex>" (compressed digests)."""
    first, second = chain_ids([f"sha256:{A}", f"sha256:{B}"])
    assert first == f"sha256:{A}"
    assert second == "sha256:" + hashlib.sha256(f"{A} {B}".encode()).hexdigest()
    assert next_chain_id(second, f"sha256:{C}") == chain_ids([f"sha256:{h}" for h in (A, B, C)])[2]
    assert chain_dir("/cvmfs/r", second) == f"/cvmfs/r/.chains/{second[7:9]}/{second[7:]}"


def make_chain(base, digests, index):
    chain = chain_ids([f"sha256:{h}" for h in digests])[index]
    os.makedirs(os.path.join(chain_dir(str(base), chain), "etc"))
    return chain


async def test_a_duccs_chain_is_served_flattened_without_a_scan(world):
    open_one, scanner, fake, metrics, base = world
    for hex_digest in (A, B):
        foreign_layer(base, hex_digest, [f"{hex_digest[0]}/.wh.x"])
    chain = make_chain(base, (A, B), 1)
    cvmfs = open_one(budget=0.0)  # no scan could finish: only the chain can serve B at once
    assert await cvmfs.prepare("k1", "", labels("c1", A, (A, B)))  # A: no chain of its own
    await cvmfs.commit("c1", "k1", {REF_LABEL: "c1"})  # containerd unpacked A; its digest label stays
    with pytest.raises(AlreadyExistsError):
        await cvmfs.prepare("k2", "c1", labels("c2", B, (B,)))
    assert fake.adopted["c2"] == chain_dir(str(base), chain) and fake.flattened == {"c2"}
    assert fake.shadows["c2"] == "" and outcomes(metrics)["chain"] == 1
    await scans_done(scanner)
    assert scanner.lookup(B) is None  # scan-ahead skipped the layer the chain serves


async def test_a_dirty_chain_or_an_unknown_parent_digest_is_not_used(world):
    open_one, scanner, fake, metrics, base = world
    foreign_layer(base, A, ["a/x"])
    chain = make_chain(base, (A,), 0)
    os.makedirs(dirty_flag(str(base), chain))
    cvmfs = open_one(budget=0.0)
    assert await cvmfs.prepare("k1", "", labels("c1", A))
    assert fake.flattened == set() and "chain" not in outcomes(metrics)
    await cvmfs.prepare("plain", "")  # no digest label: the chain above it cannot be named
    await cvmfs.commit("p", "plain")
    make_chain(base, (B,), 0)
    foreign_layer(base, B, ["b/x"])
    assert await cvmfs.prepare("k2", "p", labels("c2", B))
    assert fake.flattened == set()


async def test_a_name_committed_again_on_another_layer_gets_its_new_chain_id(world):
    open_one, scanner, fake, metrics, base = world
    for hex_digest in (A, B, C):
        foreign_layer(base, hex_digest, [f"{hex_digest[0]}/x"])
    make_chain(base, (B, C), 1)
    cvmfs = open_one(budget=0.0)
    for round_, hex_digest in enumerate((A, B)):
        await cvmfs.prepare(f"k{round_}", "", labels("x", hex_digest))  # over budget: containerd unpacks it
        await cvmfs.commit("x", f"k{round_}")
        if hex_digest == A:
            assert await cvmfs.prepare("probe", "x", labels("y", C))  # no chain (A, C): falls back
            await cvmfs.remove("probe")
            await cvmfs.remove("x")
    with pytest.raises(AlreadyExistsError):
        await cvmfs.prepare("k9", "x", labels("y", C))
    assert fake.flattened == {"y"}


async def test_restore_checks_the_chain_directory_of_a_flattened_layer(world):
    open_one, scanner, fake, metrics, base = world
    chain = make_chain(base, (A,), 0)  # the layer's own directory is absent: the chain serves it
    cvmfs = open_one(budget=0.0)
    with pytest.raises(AlreadyExistsError):
        await cvmfs.prepare("k1", "", labels("c1", A))
    assert (await cvmfs.stat("c1")).labels[CHAIN_LABEL] == chain_dir(str(base), chain)
    assert (await cvmfs.restore()).available == 1
    os.rename(chain_dir(str(base), chain), chain_dir(str(base), chain) + ".away")
    assert (await cvmfs.restore()).unavailable == ("c1",)
