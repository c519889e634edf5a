"""Extract one OCI layer tar into a directory overlayfs can use as a lower layer.

Whiteouts become overlayfs-native: `.wh.<name>` a char device 0/0 named `<name>`,
`.wh..wh..opq` (OCI) or `.wh..opq` (unpacked.cern.ch) the `trusted.overlay.opaque=y`
xattr on its directory. That is what lets the snapshotter hand the directory to
overlayfs as is, in O(1), and still hide what an upper layer deleted.

The tar is untrusted: entries that would land outside the root (absolute names, `..`,
a path through a symlink the layer itself made) or hard links pointing outside it are
refused with InvalidArgumentError, before anything is written for them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tarfile
from typing import IO

from snapmux.domain.errors import InvalidArgumentError

OPAQUE_MARKERS = frozenset({".wh..wh..opq", ".wh..opq"})
WHITEOUT_PREFIX = ".wh."
OPAQUE_XATTR = "trusted.overlay.opaque"
_XATTR_PAX = "SCHILY.xattr."


def extract_layer(stream: IO[bytes], root: str) -> None:
    """Stream a (gzip or plain) layer tar into `root`, created here; directory times last."""
    os.makedirs(root, mode=0o755)
    directories: list[tuple[str, tarfile.TarInfo]] = []
    with tarfile.open(fileobj=stream, mode="r|*") as tar:
        for member in tar:
            _extract_member(tar, member, root, directories)
    for path, member in reversed(directories):
        _apply_metadata(path, member, final=True)


def _relative_parts(name: str) -> list[str]:
    if name.startswith("/"):
        raise InvalidArgumentError(f"layer entry {name[:200]!r} is an absolute path")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise InvalidArgumentError(f"layer entry {name[:200]!r} escapes the layer root")
    return parts


def _walk_inside(root: str, parts: list[str], create: bool) -> str:
    """The directory `root/parts...`, refusing to pass through a symlink or a non-directory."""
    path = root
    for part in parts:
        path = os.path.join(path, part)
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            if not create:
                raise InvalidArgumentError(f"layer path {path[len(root):]!r} does not exist") from None
            os.mkdir(path, 0o755)
            continue
        if not stat.S_ISDIR(mode):
            raise InvalidArgumentError(f"layer path {path[len(root):]!r} goes through a non-directory")
    return path


def _extract_member(tar: tarfile.TarFile, member: tarfile.TarInfo, root: str, directories: list) -> None:
    parts = _relative_parts(member.name)
    if not parts:
        if member.isdir():
            directories.append((root, member))
            return
        raise InvalidArgumentError(f"layer entry {member.name!r} names the root but is not a directory")
    parent = _walk_inside(root, parts[:-1], create=True)
    base = parts[-1]
    if base in OPAQUE_MARKERS:
        os.setxattr(parent, OPAQUE_XATTR, b"y")
        return
    if base.startswith(WHITEOUT_PREFIX):
        _whiteout(parent, base[len(WHITEOUT_PREFIX) :], member.name)
        return
    path = os.path.join(parent, base)
    _make_room(path, member)
    _create(tar, member, root, path)
    if member.isdir():
        directories.append((path, member))
    else:
        _apply_metadata(path, member, final=False)


def _whiteout(parent: str, name: str, entry: str) -> None:
    if not name or name in (".", "..") or name.startswith(WHITEOUT_PREFIX):
        return  # aufs bookkeeping (.wh..wh.plnk, ...): nothing for overlayfs
    path = os.path.join(parent, name)
    if os.path.lexists(path):
        if os.path.isdir(path) and not os.path.islink(path):
            os.setxattr(path, OPAQUE_XATTR, b"y")  # deleted and re-created in this layer
        return
    os.mknod(path, stat.S_IFCHR | 0o000, os.makedev(0, 0))


def _make_room(path: str, member: tarfile.TarInfo) -> None:
    """A later entry replaces an earlier one, as in any tar; a directory merges into a directory."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode) and member.isdir():
        return
    if stat.S_ISCHR(mode) and os.lstat(path).st_rdev == os.makedev(0, 0) and member.isdir():
        os.unlink(path)  # whiteout then directory: a fresh directory hiding the lower one
        os.mkdir(path, 0o755)
        os.setxattr(path, OPAQUE_XATTR, b"y")
        return
    if stat.S_ISDIR(mode):
        shutil.rmtree(path)  # never follows symlinks; only touches what this layer wrote
    else:
        os.unlink(path)


def _create(tar: tarfile.TarFile, member: tarfile.TarInfo, root: str, path: str) -> None:
    if member.isreg():
        source = tar.extractfile(member)
        assert source is not None
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as target:
            shutil.copyfileobj(source, target, 1 << 20)
    elif member.isdir():
        if not os.path.isdir(path):
            os.mkdir(path, 0o755)
    elif member.issym():
        os.symlink(member.linkname, path)
    elif member.islnk():
        _hard_link(member, root, path)
    elif member.ischr() or member.isblk():
        kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
        os.mknod(path, kind | 0o600, os.makedev(member.devmajor, member.devminor))
    elif member.isfifo():
        os.mkfifo(path, 0o600)
    else:
        raise InvalidArgumentError(f"layer entry {member.name!r} has unsupported type {member.type!r}")


def _hard_link(member: tarfile.TarInfo, root: str, path: str) -> None:
    parts = _relative_parts(member.linkname)
    if not parts:
        raise InvalidArgumentError(f"hard link {member.name!r} points at the layer root")
    source = os.path.join(_walk_inside(root, parts[:-1], create=False), parts[-1])
    try:
        mode = os.lstat(source).st_mode
    except FileNotFoundError:
        raise InvalidArgumentError(f"hard link {member.name!r} to {member.linkname!r}: no such entry") from None
    if stat.S_ISDIR(mode):
        raise InvalidArgumentError(f"hard link {member.name!r} points at a directory")
    os.link(source, path, follow_symlinks=False)


def _apply_metadata(path: str, member: tarfile.TarInfo, final: bool) -> None:
    """Owner, then mode (chown clears set-id bits), xattrs, then times; directories only at the end."""
    if member.islnk():
        return  # shares the inode (and metadata) of its target
    os.lchown(path, member.uid, member.gid)
    if not member.issym():
        os.chmod(path, member.mode & 0o7777)
    for key, value in member.pax_headers.items():
        name = key[len(_XATTR_PAX) :]
        if key.startswith(_XATTR_PAX) and not name.startswith("trusted.overlay."):  # only we write those
            with contextlib.suppress(OSError) if member.issym() else contextlib.nullcontext():
                os.setxattr(path, name, value.encode("utf-8", "surrogateescape"), follow_symlinks=False)
    if final or not member.isdir():
        os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)
