"""Hostile layer tars, continued (test_hostile_layers.py): resource bombs, malformed and rewriting
(PAX, GNU) headers, and the extractor's own bookkeeping. Each refused layer names its entry and
leaves the host sentinel as it was."""

from __future__ import annotations

import os
import tarfile

import pytest

from snapmux.adapters.cvmfs.layer_entries import LayerLimits
from snapmux.domain.errors import InvalidArgumentError
from tests.support.hostile_extract import DIR, LNK, SYM, extract, host, needs_root, refused, root  # noqa: F401
from tests.support.hostile_tars import info, pax_record, raw_header, tar_bytes

pytestmark = needs_root


# -- resource bombs and malformed headers

def test_a_sparse_file_is_refused(host, root):
    sparse = raw_header(b"holes", tarfile.GNUTYPE_SPARSE, 0) + b"\0" * 1024
    refused(root, sparse, r"'holes' is a sparse file")


def test_a_pax_1_0_sparse_map_is_refused_before_it_is_read(host, root):
    records = b"".join(pax_record(k, v) for k, v in (("GNU.sparse.major", "1"), ("GNU.sparse.minor", "0"),
                                                     ("GNU.sparse.name", "holes"), ("GNU.sparse.realsize", "1")))
    bomb = raw_header(b"pax", tarfile.XHDTYPE, len(records), records) + raw_header(b"x", tarfile.REGTYPE, 512,
                                                                                   b"99999999999\n")
    refused(root, bomb + b"\0" * 1024, "sparse")


def test_a_huge_extended_header_is_refused_before_it_is_read(host, root):
    refused(root, raw_header(b"pax", tarfile.XHDTYPE, (8 << 30) - 1), r"8589934591-byte extended header")


def test_a_huge_gnu_long_name_is_refused(host, root):
    refused(root, raw_header(b"././@LongLink", tarfile.GNUTYPE_LONGNAME, 2 << 20), "extended header")


def test_a_chain_of_extended_headers_is_refused(host, root):
    record = pax_record("comment", "x")
    chain = raw_header(b"pax", tarfile.XHDTYPE, len(record), record) * 50 + raw_header(b"f", tarfile.REGTYPE, 0)
    refused(root, chain + b"\0" * 1024, "chains more than 8")


def test_a_decompression_bomb_stops_at_the_byte_limit(host, root):
    bomb = tar_bytes([info("zeros", data=bytes(4 << 20))], compress=True)
    assert len(bomb) < 64 << 10
    with pytest.raises(InvalidArgumentError, match="more than 1048576 bytes"):
        extract(root, bomb, LayerLimits(max_bytes=1 << 20))


def test_too_many_directories_are_refused(host, root):
    with pytest.raises(InvalidArgumentError, match="more than 10 directories"):
        extract(root, [info(f"d{index}", DIR) for index in range(11)], LayerLimits(max_directories=10))
    extract(str(root) + "2", [info("d", DIR)] * 20 + [info(f"e{index}", DIR) for index in range(9)],
            LayerLimits(max_directories=10))  # the same directory again counts once


@pytest.mark.parametrize("kind", [SYM, LNK])
def test_an_empty_link_target_is_refused(host, root, kind):
    refused(root, [info("l", kind, linkname="")], "empty link target")


def test_too_many_entries_are_refused(host, root):
    with pytest.raises(InvalidArgumentError, match="more than 100 entries"):
        extract(root, [info(f"f{index}") for index in range(101)], LayerLimits(max_entries=100))


def test_a_file_cut_short_is_refused_by_name(host, root):
    whole = tar_bytes([info("big", data=b"x" * 5000)])
    refused(root, whole[:2048], r"'big' \(file\): unexpected end of data")


def test_garbage_and_unknown_types_are_refused(host, root):
    refused(root, b"not a tar at all" * 100, "not a readable tar")
    refused(str(root) + "2", [info("v", b"V")], r"'v' \(type b'V'\)")


# -- the extractor's own bookkeeping cannot be turned against it

def test_deep_paths_are_refused_before_they_become_uncleanable(host, root):
    refused(root, [info("/".join(["d"] * 300), DIR)], "more than 256 directories deep")
    assert not os.path.exists(f"{root}/d")  # refused before its parents were made


def test_deep_paths_and_many_directories_neither_recurse_nor_leak_descriptors(host, root):
    deep = "/".join(["d"] * 250)
    wide = [info(f"w{index}/f", data=b"x") for index in range(300)]
    extract(root, [info(deep, DIR, 0o700), info(f"{deep}/x", data=b"x"), *wide, *wide[:3],
                   info("w0/late", data=b"late")])
    assert open(f"{root}/{deep}/x").read() == "x" and sorted(os.listdir(f"{root}/w0")) == ["f", "late"]
    assert len(os.listdir("/proc/self/fd")) < 200


# -- PAX and GNU records that rewrite an entry after its ustar header looked harmless

def pax_override(member, **records):
    member[0].pax_headers.update(records)
    return member


@pytest.mark.parametrize("records, match", [
    ({"path": "../../escape"}, "escapes the layer root"),
    ({"path": "/etc/escape"}, "is an absolute path"),
    ({"path": "ok/../../escape"}, "escapes the layer root"),
], ids=["pax-dotdot", "pax-absolute", "pax-nested"])
def test_a_pax_path_cannot_move_a_harmless_entry_out(host, root, records, match):
    refused(root, [pax_override(info("harmless", data=b"x"), **records)], match)
    assert not os.path.exists(os.path.join(os.path.dirname(os.path.dirname(root)), "escape"))


def test_a_pax_linkpath_cannot_point_a_hard_link_out(host, root):
    refused(root, [info("f", data=b"x"), pax_override(info("h", LNK, linkname="f"), linkpath="../../host/secret")],
            "escapes the layer root")


def test_a_global_pax_header_applies_its_xattrs_to_every_entry_and_is_refused(host, root):
    records = pax_record("SCHILY.xattr.trusted.overlay.redirect", "/etc")
    raw = raw_header(b"global", tarfile.XGLTYPE, len(records), records) + tar_bytes([info("f", data=b"x")])
    refused(root, raw, "trusted.overlay.redirect")


@pytest.mark.parametrize("form", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT], ids=["gnu", "pax"])
def test_long_names_and_link_targets_within_limits_extract(host, root, form):
    long_dir, long_target = "/".join(["component" * 20] * 3), "t" * 1000
    extract(root, [info(f"{long_dir}/file", data=b"x"), info("s", SYM, linkname=long_target),
                   info("h", LNK, linkname=f"{long_dir}/file")], format=form)
    assert open(f"{root}/{long_dir}/file").read() == "x" and os.readlink(f"{root}/s") == long_target
    assert os.lstat(f"{root}/h").st_ino == os.lstat(f"{root}/{long_dir}/file").st_ino


@pytest.mark.parametrize("name", [".wh...", ".wh..", ".wh..wh.plnk", ".wh..wh..wh.x"])
def test_whiteouts_of_dot_names_and_aufs_bookkeeping_change_nothing(host, root, name):
    extract(root, [info("d", DIR), info(f"d/{name}")])
    assert os.listdir(f"{root}/d") == [] and os.listxattr(f"{root}/d") == []
