"""Hostile layer tars against the extractor, written by someone who has read untar.py.

Every refused layer must name the entry, and every layer, refused or not, must leave the
"host" (a sentinel tree the layer's symlinks point into) exactly as it was: modes, owners,
times, content, xattrs. Crafted with raw tarfile headers, so nothing a builder would refuse
to write stands between the attack and the extractor.
"""

from __future__ import annotations

import os
import stat
import tarfile

import pytest

from snapmux.adapters.cvmfs.whiteout_names import OPAQUE_XATTR
from tests.support.hostile_extract import BLK, CHR, DIR, FIFO, LNK, SYM, extract, host, needs_root, refused, root  # noqa: F401
from tests.support.hostile_tars import info

pytestmark = needs_root


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
