"""zstd layers (`application/vnd.oci.image.layer.v1.tar+zstd`) are published like gzip ones,
under the same limits and the same digest check (on the compressed bytes)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import stat

import pytest

from snapmux.adapters.cvmfs.layer_compression import ZSTD_MAGIC, zstd
from snapmux.adapters.cvmfs.layer_entries import LayerLimits
from snapmux.adapters.cvmfs.layers import CvmfsLayerStore, parse_digest
from snapmux.adapters.cvmfs.publish import LayoutPublisher
from snapmux.adapters.cvmfs.untar import extract_layer
from snapmux.domain.errors import InvalidArgumentError
from tests.support.hostile_tars import info, tar_bytes
from tests.support.images import LAYER_ZSTD, whiteout_image
from tests.support.publishing import publish_or_raise
from tests.support.requirements import lacking_root, require


@pytest.fixture(autouse=True)
def _root():
    require(*lacking_root("overlay whiteouts are char devices 0/0 and trusted.* xattrs"))


def zstd_tar(members, **options) -> bytes:
    return zstd.compress(tar_bytes(members), options=options or None)


def test_a_zstd_layer_is_extracted_like_a_gzip_one(tmp_path):
    blob = zstd_tar([info("d", b"5", 0o755), info("d/hello.txt", data=b"hello zstd\n")])
    assert blob.startswith(ZSTD_MAGIC)
    extract_layer(io.BytesIO(blob), str(tmp_path / "layerfs"))
    assert (tmp_path / "layerfs" / "d" / "hello.txt").read_bytes() == b"hello zstd\n"


def test_a_zstd_layer_may_start_with_a_skippable_frame(tmp_path):
    metadata = b"not a tar"
    blob = (0x184D2A5E).to_bytes(4, "little") + len(metadata).to_bytes(4, "little") + metadata
    extract_layer(io.BytesIO(blob + zstd_tar([info("f", data=b"after the frame")])), str(tmp_path / "layerfs"))
    assert (tmp_path / "layerfs" / "f").read_bytes() == b"after the frame"


def test_a_zstd_bomb_stops_at_the_byte_limit(tmp_path):
    bomb = zstd_tar([info("zeros", data=bytes(16 << 20))])
    assert len(bomb) < 64 << 10
    with pytest.raises(InvalidArgumentError, match="more than 1048576 bytes"):
        extract_layer(io.BytesIO(bomb), str(tmp_path / "layerfs"), LayerLimits(max_bytes=1 << 20))


def test_a_zstd_layer_gets_the_same_entry_checks(tmp_path):
    with pytest.raises(InvalidArgumentError, match="escapes the layer root"):
        extract_layer(io.BytesIO(zstd_tar([info("../evil", data=b"x")])), str(tmp_path / "layerfs"))


def test_a_zstd_frame_asking_for_a_huge_window_is_refused(tmp_path):
    """The frame header declares a 1 GiB window: refused before any of it is allocated."""
    compressor = zstd.ZstdCompressor(options={zstd.CompressionParameter.window_log: 30})
    blob = compressor.compress(tar_bytes([info("f", data=b"x")])) + compressor.flush()  # streamed: size unknown
    with pytest.raises(InvalidArgumentError, match="not readable zstd"):
        extract_layer(io.BytesIO(blob), str(tmp_path / "layerfs"))


def test_corrupt_zstd_is_a_bad_layer_not_a_crash(tmp_path):
    blob = bytearray(zstd_tar([info("f", data=os.urandom(4096))]))
    blob[len(blob) // 2:] = bytes(len(blob) - len(blob) // 2)
    with pytest.raises(InvalidArgumentError, match="not readable zstd|not a readable tar"):
        extract_layer(io.BytesIO(bytes(blob)), str(tmp_path / "layerfs"))


def test_a_zstd_image_is_published_with_overlay_whiteouts(tmp_path):
    image = whiteout_image(str(tmp_path / "oci"), compress="zstd")
    assert {layer.media_type for layer in image.layers} == {LAYER_ZSTD}
    result = publish_or_raise(tmp_path / "out", image.oci_ref)
    assert (result.published, result.skipped) == (len(image.layers), 0)
    store = CvmfsLayerStore(str(tmp_path / "out"))
    top = store.layer_path(parse_digest(image.layers[2].digest))
    assert stat.S_ISCHR(os.lstat(f"{top}/data/gone.txt").st_mode)
    assert os.getxattr(f"{top}/data/dir", "trusted.overlay.opaque") == b"y"
    assert (tmp_path / "out" / ".layers").is_dir()
    assert os.path.isfile(f"{store.layer_path(parse_digest(image.layers[0].digest))}/bin/busybox")


def test_the_digest_is_checked_on_the_compressed_bytes(tmp_path):
    blob = zstd_tar([info("f", data=b"same content")])
    compressed = f"sha256:{hashlib.sha256(blob).hexdigest()}"
    publisher = LayoutPublisher(str(tmp_path / "out"))

    def opener(_digest):
        return contextlib.nullcontext(io.BytesIO(blob))

    uncompressed = f"sha256:{hashlib.sha256(tar_bytes([info('f', data=b'same content')])).hexdigest()}"
    with pytest.raises(InvalidArgumentError, match="has digest"):
        publisher.publish_layer(uncompressed, opener)  # the tar's digest is not the blob's
    assert not os.path.exists(publisher.store.layer_dir(parse_digest(uncompressed)))
    assert publisher.publish_layer(compressed, opener) is True
    assert publisher.store.check_now(parse_digest(compressed)).published
