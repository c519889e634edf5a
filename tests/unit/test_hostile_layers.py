"""Hostile layer tars against the extractor, written by someone who has read untar.py.

Every refused layer must name the entry, and every layer, refused or not, must leave the
"host" (a sentinel tree the layer's symlinks point into) exactly as it was: modes, owners,
times, content, xattrs. Crafted with raw tarfile headers, so nothing a builder would refuse
to write stands between the attack and the extractor.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile

import pytest

from snapmux.adapters.cvmfs.layer_entries import LayerLimits
from snapmux.adapters.cvmfs.untar import extract_layer
from snapmux.adapters.cvmfs.whiteout_names import OPAQUE_XATTR
from snapmux.adapters.cvmfs.whiteouts import ShadowCache, _ShadowWriter
from snapmux.domain.errors import InvalidArgumentError
from tests.support.hostile_tars import Sentinel, info, pax_record, raw_header, tar_bytes

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="owners, devices and trusted.* xattrs: needs root")

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


# -- defect 1 and its family: a directory whose metadata is pending, replaced by something else

def test_directory_then_symlink_to_a_host_file_is_refused_and_the_host_keeps_its_mode(host, root):
    refused(root, [info("d", DIR, 0o4777), info("d", SYM, linkname=host.path("file"))], r"'d' \(symlink\).*directory")


@pytest.mark.parametrize("kind", [SYM, tarfile.REGTYPE, LNK, FIFO, CHR])
def test_nothing_but_a_directory_may_replace_a_directory(host, root, kind):
    replacement = info("d", kind, linkname={SYM: host.path("dir"), LNK: "f"}.get(kind, ""))
    refused(root, [info("f"), info("d", DIR, 0o777), replacement], r"layer entry 'd' .*would replace a directory")


def test_a_nested_directory_replaced_by_a_symlink_to_a_host_directory_is_refused(host, root):
    refused(root, [info("a", DIR), info("a/b", DIR, 0o1777, uid=4242), info("a/b", SYM, linkname=host.path("dir")),
                   info("a/b/planted", data=b"x")], r"'a/b' \(symlink\)")


def test_a_later_directory_merges_and_its_metadata_wins(host, root):
    extract(root, [info("d", DIR, 0o700), info("d/x", data=b"x"), info("d", DIR, 0o751, uid=7)])
    st = os.lstat(f"{root}/d")
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o751, 7) and os.listdir(f"{root}/d") == ["x"]


def test_a_symlink_replaced_by_a_directory_gets_a_real_directory(host, root):
    extract(root, [info("s", SYM, linkname=host.path("dir")), info("s", DIR, 0o4755), info("s/x", data=b"in")])
    assert stat.S_ISDIR(os.lstat(f"{root}/s").st_mode) and open(f"{root}/s/x").read() == "in"
    assert stat.S_IMODE(os.lstat(f"{root}/s").st_mode) == 0o4755


def test_a_symlink_replaced_by_a_file_writes_the_layer_not_the_host(host, root):
    extract(root, [info("s", SYM, linkname=host.path("file")), info("s", mode=0o4755, data=b"layer")])
    assert not os.path.islink(f"{root}/s") and open(f"{root}/s", "rb").read() == b"layer"


def test_a_file_replaced_by_a_symlink_then_hard_linked_links_the_symlink_itself(host, root):
    extract(root, [info("f", data=b"x"), info("f", SYM, linkname=host.path("secret")), info("h", LNK, linkname="f"),
                   info("h", mode=0o4755, data=b"layer")])  # replaces the link: must not write through it
    assert os.path.islink(f"{root}/f") and os.readlink(f"{root}/f") == host.path("secret")
    assert not os.path.islink(f"{root}/h") and stat.S_IMODE(os.lstat(f"{root}/h").st_mode) == 0o4755


def test_a_hard_link_to_a_symlink_is_the_symlink_and_gets_no_metadata(host, root):
    extract(root, [info("s", SYM, linkname=host.path("file")), info("h", LNK, mode=0o4777, linkname="s", uid=99)])
    assert os.readlink(f"{root}/h") == host.path("file")
    assert os.lstat(f"{root}/h").st_ino == os.lstat(f"{root}/s").st_ino


@pytest.mark.parametrize("target", [
    [info(".wh.gone")],
    [info("p", FIFO)],
    [info("d", DIR)],
], ids=["whiteout", "fifo", "directory"])
def test_hard_links_only_to_files_and_symlinks(host, root, target):
    name = target[0][0].name.removeprefix(".wh.")
    refused(root, [*target, info("h", LNK, linkname=name)], r"'h' \(hard link\)")


def test_a_hard_link_through_a_symlinked_directory_is_refused(host, root):
    refused(root, [info("s", SYM, linkname=host.path("dir")), info("h", LNK, linkname="s/inner")],
            r"'h' .*goes through a symlink")


def test_entries_through_a_file_are_refused(host, root):
    refused(root, [info("f", data=b"x"), info("f/x", data=b"y")], r"'f/x'.*non-directory")


# -- whiteouts, the opaque marker and the whiteout's parent

def test_whiteout_under_a_symlink_to_a_host_directory_is_refused(host, root):
    refused(root, [info("s", SYM, linkname=host.path("dir")), info("s/.wh.inner")], r"'s/.wh.inner'.*symlink")


def test_opaque_marker_under_a_symlink_is_refused(host, root):
    refused(root, [info("s", SYM, linkname=host.path("dir")), info("s/.wh..wh..opq")], r"symlink")


def test_whiteout_of_a_symlink_leaves_its_target_alone(host, root):
    extract(root, [info("s", SYM, linkname=host.path("dir")), info(".wh.s")])
    assert os.path.islink(f"{root}/s")


def test_whiteout_of_a_directory_of_the_same_layer_makes_it_opaque(host, root):
    extract(root, [info("d", DIR), info(".wh.d"), info("w", DIR, 0o555), info("w/.wh..wh..opq")])
    assert os.getxattr(f"{root}/d", OPAQUE_XATTR) == b"y" and os.getxattr(f"{root}/w", OPAQUE_XATTR) == b"y"


def test_whiteout_then_directory_is_an_opaque_directory(host, root):
    extract(root, [info(".wh.d"), info("d", DIR, 0o750)])
    assert os.getxattr(f"{root}/d", OPAQUE_XATTR) == b"y" and stat.S_IMODE(os.lstat(f"{root}/d").st_mode) == 0o750


# -- extended attributes

@pytest.mark.parametrize("name", ["trusted.overlay.opaque", "trusted.overlay.redirect", "trusted.overlay.metacopy",
                                  "user.overlay.redirect", "user.overlay.metacopy", "user.overlay.opaque",
                                  "trusted.other", "security.selinux", "security.ima", "system.nfs4_acl", "other.x"])
def test_xattrs_outside_the_allowed_namespaces_are_refused(host, root, name):
    refused(root, [info("f", data=b"x", xattrs={name: "y"})], rf"'f' \(file\) carries xattr '{name}'")


def test_xattrs_on_a_symlink_are_refused(host, root):
    refused(root, [info("s", SYM, linkname=host.path("file"), xattrs={"user.x": "1"})], r"'s' \(symlink\).*xattr")


def test_xattrs_on_a_directory_replaced_by_nothing_land_on_the_directory(host, root):
    capability = "\x01\x00\x00\x02\x00\x20\x00\x00" + "\x00" * 12  # cap_net_raw, permitted
    extract(root, [info("d", DIR, xattrs={"user.mark": "d"}), info("d/ping", mode=0o755, data=b"x",
                                                                    xattrs={"security.capability": capability})])
    assert os.getxattr(f"{root}/d", "user.mark") == b"d"
    assert os.getxattr(f"{root}/d/ping", "security.capability")[:4] == b"\x01\x00\x00\x02"


def test_an_xattr_the_kernel_refuses_is_an_invalid_layer(host, root):
    refused(root, [info("f", data=b"x", xattrs={"system.posix_acl_access": "garbage"})], r"'f'.*refused")


# -- devices, modes, names

@pytest.mark.parametrize("member", [info("sda", BLK, devmajor=8, devminor=0), info("mem", CHR, devmajor=1, devminor=1),
                                    info("null", CHR, 0o666, devmajor=1, devminor=3)], ids=["block", "mem", "null"])
def test_device_nodes_other_than_whiteouts_are_refused(host, root, member):
    refused(root, [member], rf"'{member[0].name}' .*device node")


def test_a_0_0_char_device_is_a_whiteout_and_fifos_keep_their_mode(host, root):
    extract(root, [info("w", CHR, 0o644), info("p", FIFO, 0o640, uid=5)])
    assert os.lstat(f"{root}/w").st_rdev == 0 and stat.S_ISCHR(os.lstat(f"{root}/w").st_mode)
    st = os.lstat(f"{root}/p")
    assert stat.S_ISFIFO(st.st_mode) and (stat.S_IMODE(st.st_mode), st.st_uid) == (0o640, 5)


def test_set_id_files_writable_by_others_are_refused(host, root):
    refused(root, [info("su", mode=0o4777, data=b"x")], r"'su' \(file\) is set-id")


def test_set_id_bits_survive_the_owner_change(host, root):
    extract(root, [info("su", mode=0o4755, data=b"x", uid=0), info("wall", mode=0o2755, data=b"x", gid=5)])
    assert stat.S_IMODE(os.lstat(f"{root}/su").st_mode) == 0o4755
    assert stat.S_IMODE(os.lstat(f"{root}/wall").st_mode) == 0o2755


@pytest.mark.parametrize("name, match", [
    ("a" * 256, "longer than 255"), ("d/" * 2048 + "x", "is 4097 bytes"), ("nul\x00byte", "NUL"),
])
def test_names_the_kernel_cannot_hold_are_refused(host, root, name, match):
    member = info("placeholder", data=b"x")
    member[0].pax_headers["path"] = name
    refused(root, [member], match)


@pytest.mark.parametrize("key, value, match", [
    ("uid", "4294967296", "uid 4294967296"), ("uid", "4294967295", "uid 4294967295"), ("gid", "99999999999", "gid"),
    ("mtime", "1e300", "mtime 1e"), ("mtime", "nan", "mtime nan"), ("mtime", "-1e20", "mtime -1e"),
])
def test_owners_and_times_no_filesystem_can_hold_are_refused(host, root, key, value, match):
    member = info("f", data=b"x")
    member[0].pax_headers[key] = value
    refused(root, [member], rf"'f' \(file\) has {match}")


def test_a_pre_1970_mtime_is_kept(host, root):
    extract(root, [info("old", data=b"x", mtime=-86400)])
    assert os.lstat(f"{root}/old").st_mtime == -86400


def test_a_symlink_target_longer_than_path_max_is_refused(host, root):
    refused(root, [info("s", SYM, linkname="x" * 5000)], "link target is 5000 bytes")


def test_names_with_newlines_are_kept_and_errors_escape_them(host, root):
    extract(root, [info("new\nline", data=b"x")])
    assert os.listdir(root) == ["new\nline"]
    refused(str(root) + "2", [info("evil\nline", FIFO), info("evil\nline", DIR), info("evil\nline", FIFO)],
            r"'evil\\nline'")


def test_the_root_entry_must_be_a_directory(host, root):
    refused(root, [info("./", SYM, linkname=host.path())], "names the layer root")


def test_directory_metadata_is_applied_last_and_read_only_directories_fill(host, root):
    extract(root, [info("ro", DIR, 0o555, uid=3), info("ro/sub", DIR, 0o000), info("ro/sub/f", data=b"x"),
                   info(".", DIR, 0o711)])
    assert stat.S_IMODE(os.lstat(f"{root}/ro").st_mode) == 0o555 and os.lstat(f"{root}/ro").st_uid == 3
    assert stat.S_IMODE(os.lstat(f"{root}/ro/sub").st_mode) == 0 and open(f"{root}/ro/sub/f").read() == "x"
    assert os.lstat(f"{root}/ro").st_mtime == 1_600_000_000 and stat.S_IMODE(os.lstat(root).st_mode) == 0o711


def test_implicit_parents_are_0755_whatever_the_umask(host, root):
    old = os.umask(0o077)
    try:
        extract(root, [info("a/b/c", data=b"x")])
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.lstat(f"{root}/a").st_mode) == 0o755 == stat.S_IMODE(os.lstat(f"{root}/a/b").st_mode)


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


# -- the whiteout scanner walks foreign layers that may hold hostile symlinks

def foreign(tmp_path, files):
    layerfs = tmp_path / "layout" / "layerfs"
    for name in files:
        (layerfs / name).parent.mkdir(parents=True, exist_ok=True)
        (layerfs / name).write_text("")
    return layerfs


def test_the_scanner_never_descends_a_symlink_out_of_the_layer(tmp_path, host):
    elsewhere = Sentinel.create(str(tmp_path / "elsewhere"))
    (tmp_path / "elsewhere" / "dir" / ".wh.victim").write_text("")
    before = elsewhere.snapshot()
    layerfs = foreign(tmp_path, ["etc/.wh.gone"])
    os.symlink(elsewhere.path("dir"), layerfs / "s")
    os.symlink(host.path("dir"), layerfs / ".wh.s-link")
    shadows = ShadowCache(str(tmp_path / "root"), userxattr=False).build("a" * 64, str(layerfs))
    assert not os.path.lexists(os.path.join(shadows.lower, "s")) and os.path.lexists(f"{shadows.lower}/etc/gone")
    assert os.path.lexists(f"{shadows.lower}/s-link") and elsewhere.snapshot() == before


def test_the_scanner_refuses_a_layer_root_that_is_a_symlink(tmp_path, host):
    layerfs = tmp_path / "layerfs"
    os.symlink(host.path(), layerfs)
    cache = ShadowCache(str(tmp_path / "root"), userxattr=False)
    with pytest.raises(ValueError, match="is a symlink"):
        cache.build("a" * 64, str(layerfs))
    assert cache.lookup("a" * 64) is None


@pytest.mark.parametrize("side", ["upper", "layer"])
def test_directory_attributes_are_never_copied_through_a_swapped_symlink(tmp_path, host, monkeypatch, side):
    layerfs = foreign(tmp_path, ["d/.wh.gone"])
    os.chmod(layerfs / "d", 0o1777)
    original = _ShadowWriter._copy_dir_attributes

    def swapped(writer):
        victim = os.path.join(writer.upper if side == "upper" else writer.layerfs, "d")
        os.rename(victim, victim + "-moved")
        os.symlink(host.path("dir"), victim)  # what a racing writer of a mutable layout could do
        return original(writer)

    monkeypatch.setattr(_ShadowWriter, "_copy_dir_attributes", swapped)
    with pytest.raises(OSError):
        ShadowCache(str(tmp_path / "root"), userxattr=False).build("a" * 64, str(layerfs))


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
