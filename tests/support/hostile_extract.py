"""Shared by the hostile-layer tests: the host sentinel a layer must leave untouched, the scratch
root it is extracted into, and the two calls they make (extract, refused)."""

from __future__ import annotations

import io
import os
import tarfile

import pytest

from snapmux.adapters.cvmfs.untar import extract_layer
from snapmux.domain.errors import InvalidArgumentError
from tests.support.hostile_tars import Sentinel, tar_bytes

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="owners, devices and trusted.* xattrs: needs root")

DIR, SYM, LNK, CHR, BLK, FIFO = (tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE,
                                tarfile.BLKTYPE, tarfile.FIFOTYPE)


@pytest.fixture
def host(tmp_path):
    sentinel = Sentinel.create(str(tmp_path / "host"))
    before = sentinel.snapshot()
    yield sentinel
    assert sentinel.snapshot() == before, "the layer changed a path outside its root"


@pytest.fixture
def root(tmp_path):
    return str(tmp_path / "scratch" / "layerfs")


def extract(root, members, limits=None, **options):
    data = members if isinstance(members, bytes) else tar_bytes(members, **options)
    extract_layer(io.BytesIO(data), root, limits)
    return root


def refused(root, members, match, **options):
    with pytest.raises(InvalidArgumentError, match=match):
        extract(root, members, **options)
