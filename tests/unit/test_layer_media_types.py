"""Only layers containerd itself unpacks are published: by the manifest's media type, and by what
the blob's bytes are (bzip2 and xz, which Python's tarfile reads and containerd does not)."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import re

import pytest

from snapmux.adapters.cvmfs.oci import OciLayoutSource
from snapmux.adapters.cvmfs.oci_documents import LAYER_MEDIA_TYPES
from snapmux.adapters.cvmfs.untar import extract_layer
from snapmux.adapters.overlay.lowers import OVERLAYFS_MAX_STACK
from snapmux.domain.errors import InvalidArgumentError
from tests.support.hostile_tars import info, tar_bytes
from tests.support.images import LAYER_GZIP, Descriptor, file, write_image, write_layer
from tests.support.requirements import lacking_root, require


def image_with_layer_type(tmp_path, media_type: str | None) -> OciLayoutSource:
    layout = str(tmp_path / "oci")
    good = write_layer(layout, [file("x", "x")])
    layer = Descriptor(media_type, good.digest, good.size)  # type: ignore[arg-type]
    write_image(layout, "t", [layer], ["/x"])
    return OciLayoutSource(layout, "t")


@pytest.mark.parametrize("media_type", [
    "application/vnd.oci.image.layer.v1.tar+gzip+encrypted",
    "application/vnd.oci.image.layer.v1.tar+bzip2",
    "application/vnd.docker.image.rootfs.diff.tar.xz",
    "application/vnd.oci.image.config.v1+json",
    "application/wasm",
    None,
], ids=["encrypted", "bzip2", "xz", "a-config", "an-artifact", "none"])
def test_a_layer_of_a_type_containerd_does_not_unpack_is_refused_by_name(tmp_path, media_type):
    with pytest.raises(InvalidArgumentError, match=r"layer 0 \(sha256:[0-9a-f]{64}\): media type " + re.escape(repr(media_type))):
        image_with_layer_type(tmp_path, media_type).image()


@pytest.mark.parametrize("media_type", sorted(LAYER_MEDIA_TYPES))
def test_every_layer_type_containerd_unpacks_is_accepted(tmp_path, media_type):
    assert image_with_layer_type(tmp_path, media_type).image().layers


def test_the_docker_and_oci_layer_types_are_the_ten_containerd_knows():
    assert LAYER_MEDIA_TYPES >= {LAYER_GZIP, "application/vnd.docker.image.rootfs.diff.tar.gzip",
                                 "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"}
    assert len(LAYER_MEDIA_TYPES) == 10


@pytest.mark.parametrize("compress, name", [(bz2.compress, "bzip2"), (lzma.compress, "xz")])
def test_a_bzip2_or_xz_blob_is_refused_whatever_its_media_type_says(tmp_path, compress, name):
    blob = compress(tar_bytes([info("f", data=b"x")]))
    with pytest.raises(InvalidArgumentError, match=f"layer is {name}-compressed"):
        extract_layer(io.BytesIO(blob), str(tmp_path / "layerfs"))
    assert not (tmp_path / "layerfs" / "f").exists()


@pytest.mark.parametrize("compress", [gzip.compress, lambda data: data], ids=["gzip", "plain"])
def test_gzip_and_plain_tars_still_extract(tmp_path, compress):
    require(*lacking_root("extraction sets owners"))
    extract_layer(io.BytesIO(compress(tar_bytes([info("f", data=b"kept")]))), str(tmp_path / "layerfs"))
    assert (tmp_path / "layerfs" / "f").read_bytes() == b"kept"


def test_a_manifest_of_more_layers_than_overlayfs_stacks_is_refused_before_any_blob(tmp_path):
    layout = str(tmp_path / "oci")
    good = write_layer(layout, [file("x", "x")])
    write_image(layout, "t", [good] * (OVERLAYFS_MAX_STACK + 1), ["/x"])
    os.unlink(os.path.join(layout, "blobs", "sha256", good.digest.split(":")[1]))  # never read
    with pytest.raises(InvalidArgumentError, match=r"manifest sha256:[0-9a-f]{64} has 501 layers; overlayfs stacks at"
                                                   " most 500, so containerd could not unpack it"):
        OciLayoutSource(layout, "t").image()


def test_a_manifest_of_exactly_the_limit_is_accepted(tmp_path):
    layout = str(tmp_path / "oci")
    good = write_layer(layout, [file("x", "x")])
    write_image(layout, "t", [good] * OVERLAYFS_MAX_STACK, ["/x"])
    assert len(OciLayoutSource(layout, "t").image().layers) == OVERLAYFS_MAX_STACK
