"""Digest parsing and layer availability in the CVMFS layout."""

from __future__ import annotations

import pytest

from snapmux.adapters.cvmfs.layers import (
    CRI_DIGEST_LABEL,
    STARGZ_DIGEST_LABEL,
    CvmfsLayerStore,
    Servable,
    digest_from_labels,
    parse_digest,
)
from snapmux.adapters.cvmfs.whiteout_names import PUBLISHED_MARKER
from snapmux.domain.errors import InvalidArgumentError

HEX = "ab" + "0" * 62


def make_layer(base, hex_digest=HEX, published=True):
    layer = base / ".layers" / hex_digest[:2] / hex_digest
    (layer / "layerfs").mkdir(parents=True)
    if published:
        (layer / PUBLISHED_MARKER).write_text("{}")
    return layer / "layerfs"


def test_parse_digest_takes_the_hex():
    assert parse_digest(f"sha256:{HEX}") == HEX


@pytest.mark.parametrize(
    "bad",
    [
        "",
        HEX,
        f"sha512:{HEX}",
        f"sha256:{HEX.upper()}",
        f"sha256:{HEX[:-1]}",
        f"sha256:{HEX}0",
        "sha256:../../../../etc/passwd" + "0" * 40,
        f"sha256:{HEX[:30]}/{HEX[31:]}",
        f"sha256:{HEX}\n",
        f" sha256:{HEX}",
        None,
    ],
)
def test_malformed_digest_is_invalid_argument(bad):
    with pytest.raises(InvalidArgumentError):
        parse_digest(bad)


def test_digest_comes_from_cri_or_stargz_label():
    assert digest_from_labels({CRI_DIGEST_LABEL: f"sha256:{HEX}"}) == HEX
    assert digest_from_labels({STARGZ_DIGEST_LABEL: f"sha256:{HEX}"}) == HEX
    assert digest_from_labels({CRI_DIGEST_LABEL: f"sha256:{HEX}", STARGZ_DIGEST_LABEL: f"sha256:{HEX}"}) == HEX
    assert digest_from_labels({"other": "x"}) is None
    assert digest_from_labels(None) is None


def test_conflicting_digest_labels_are_invalid():
    with pytest.raises(InvalidArgumentError):
        digest_from_labels({CRI_DIGEST_LABEL: f"sha256:{HEX}", STARGZ_DIGEST_LABEL: f"sha256:{'1' * 64}"})


def test_layer_path_follows_the_layout(tmp_path):
    store = CvmfsLayerStore(str(tmp_path))
    assert store.layer_path(HEX) == f"{tmp_path}/.layers/ab/{HEX}/layerfs"
    with pytest.raises(InvalidArgumentError):
        store.layer_path("../x")


async def test_published_layer_is_servable(tmp_path):
    path = make_layer(tmp_path)
    assert await CvmfsLayerStore(str(tmp_path)).servable(HEX) == Servable(str(path))


async def test_missing_layer_or_file_in_place_of_dir_is_not_servable(tmp_path):
    store = CvmfsLayerStore(str(tmp_path))
    assert await store.servable(HEX) is None
    layer = tmp_path / ".layers" / "ab" / HEX
    layer.mkdir(parents=True)
    (layer / "layerfs").write_text("not a dir")
    (layer / PUBLISHED_MARKER).write_text("{}")
    assert await store.servable(HEX) is None


async def test_foreign_layer_is_served_at_once_only_when_configured(tmp_path):
    path = make_layer(tmp_path, published=False)
    assert await CvmfsLayerStore(str(tmp_path)).servable(HEX) is None
    assert await CvmfsLayerStore(str(tmp_path), "download").servable(HEX) is None
    assert await CvmfsLayerStore(str(tmp_path), "scan").servable(HEX) is None  # no scanner: nothing to scan with
    assert await CvmfsLayerStore(str(tmp_path), "serve").servable(HEX) == Servable(str(path))
    with pytest.raises(ValueError):
        CvmfsLayerStore(str(tmp_path), "sometimes")


async def test_reachable_notices_a_vanished_layer(tmp_path):
    path = make_layer(tmp_path)
    store = CvmfsLayerStore(str(tmp_path))
    assert await store.reachable(str(path))
    path.rmdir()
    assert not await store.reachable(str(path))


async def test_a_base_overlayfs_cannot_take_serves_nothing(tmp_path):
    base = tmp_path / "odd:name"
    make_layer(base)
    store = CvmfsLayerStore(str(base))
    assert not store.usable and await store.servable(HEX) is None


async def test_the_debug_log_says_why_each_layer_is_served_in_place_or_not(tmp_path, caplog):
    caplog.set_level("DEBUG", logger="snapmux.adapters.cvmfs.layers")
    make_layer(tmp_path)
    other = "cd" + "1" * 62
    make_layer(tmp_path, other, published=False)
    store = CvmfsLayerStore(str(tmp_path), "download")
    for digest in (HEX, other, "ef" + "2" * 62):
        await store.servable(digest)
    assert [(r.layer, r.in_place, r.reason) for r in caplog.records] == [
        (HEX, True, "available (published)"),
        (other, False, "foreign (foreign-layers = download)"),
        ("ef" + "2" * 62, False, f"missing from {tmp_path}"),
    ]
