"""Extract one OCI layer tar into a directory overlayfs can use as a lower layer.

Whiteouts become overlayfs-native: `.wh.<name>` a char device 0/0 named `<name>`,
`.wh..wh..opq` (OCI) or `.wh..opq` (unpacked.cern.ch) the `trusted.overlay.opaque=y`
xattr on its directory. That is what lets the snapshotter hand the directory to
overlayfs as is, in O(1), and still hide what an upper layer deleted.

The tar is untrusted and the publisher runs as root, so no call here ever resolves a path
through a symlink: every directory is opened component by component with O_NOFOLLOW |
O_DIRECTORY relative to its parent's descriptor, every entry is created, changed and
inspected relative to its directory's descriptor (files through the descriptor that wrote
them), and a symlink gets only the owner and times, set on the link itself. Entries that
would land outside the root (absolute names, `..`, a path through a symlink or a file) or
hard links pointing outside it are refused with InvalidArgumentError naming the entry.

A later entry may replace an earlier non-directory, as in any tar (its metadata was applied
when it was written; nothing refers to it). A directory is final: a later directory merges
into it, anything else replacing it is refused, because its metadata is applied only after
the whole layer (so that a read-only directory can still be filled) and nothing else may
stand at its path by then. What a layer may hold at all is decided in `layer_entries`.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tarfile
from typing import IO

from snapmux.adapters.cvmfs.layer_entries import XATTR_PAX, LayerLimits, describe, entries, kind_of, xattrs
from snapmux.adapters.cvmfs.whiteout_names import OPAQUE_MARKERS, OPAQUE_XATTR, WHITEOUT_PREFIX
from snapmux.domain.errors import InvalidArgumentError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_OPEN_DIRS = 64


def extract_layer(stream: IO[bytes], root: str, limits: LayerLimits | None = None) -> None:
    """Stream a (zstd, gzip or plain) layer tar into `root`, created here; directory metadata last."""
    os.makedirs(root, mode=0o755)
    limits = limits or LayerLimits()
    with _Extractor(root, limits.max_directories) as extractor:
        for tar, member in entries(stream, limits):
            try:
                extractor.add(tar, member)
            except OSError as error:  # ENOSPC, EIO...: name the entry, keep the errno
                raise OSError(error.errno, f"{describe(member)}: {error.strerror}") from None
            except tarfile.TarError as error:  # its data cut short
                raise InvalidArgumentError(f"{describe(member)}: {error}") from None
        extractor.finish()


def relative_parts(name: str) -> tuple[str, ...]:
    if name.startswith("/"):
        raise InvalidArgumentError(f"layer entry {name[:200]!r} is an absolute path")
    parts = tuple(part for part in name.split("/") if part not in ("", "."))
    if ".." in parts:
        raise InvalidArgumentError(f"layer entry {name[:200]!r} escapes the layer root")
    return parts


class _Extractor:
    """Holds the root's descriptor and a few open directories; `directories` maps each
    directory entry's path to its (last) member, in the order the paths first appeared."""

    def __init__(self, root: str, max_directories: int) -> None:
        self.root_fd = os.open(root, _DIR_FLAGS)
        self.max_directories = max_directories
        self.dirs: dict[tuple[str, ...], int] = {}
        self.directories: dict[tuple[str, ...], tarfile.TarInfo] = {}

    def __enter__(self) -> _Extractor:
        return self

    def __exit__(self, *exc: object) -> None:
        self._close_dirs()
        os.close(self.root_fd)

    def _close_dirs(self) -> None:
        for fd in self.dirs.values():
            os.close(fd)
        self.dirs.clear()

    def open_dir(self, parts: tuple[str, ...], create: bool, member: tarfile.TarInfo) -> int:
        """The descriptor of directory `root/parts` (borrowed: cached, closed by the extractor).
        Cached descriptors stay right: a directory is never replaced or moved (see above)."""
        if not parts:
            return self.root_fd
        if parts in self.dirs:
            return self.dirs[parts]
        start = len(parts) - 1 if parts[:-1] in self.dirs else 0  # siblings share a parent; else from the root
        fd, owned = (self.dirs[parts[:-1]] if start else self.root_fd), False
        try:
            for name in parts[start:]:
                child = _open_child(fd, name, create, member, parts)
                if owned:
                    os.close(fd)
                fd, owned = child, True
        except BaseException:
            if owned:
                os.close(fd)
            raise
        self.dirs[parts] = fd
        return fd

    def add(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        if len(self.dirs) > _OPEN_DIRS:
            self._close_dirs()  # between entries only: an entry's borrowed descriptors stay open
        parts = relative_parts(member.name)
        if not parts:
            if not member.isdir():
                raise InvalidArgumentError(f"{describe(member)} names the layer root but is not a directory")
            self._pending(parts, member)
            return
        parent = self.open_dir(parts[:-1], True, member)
        base = parts[-1]
        if base in OPAQUE_MARKERS:
            os.setxattr(parent, OPAQUE_XATTR, b"y")
        elif base.startswith(WHITEOUT_PREFIX):
            self._whiteout(parent, base[len(WHITEOUT_PREFIX):], member)
        elif self._make_room(parent, base, member):
            self._create(tar, member, parent, base)

    def _pending(self, parts: tuple[str, ...], member: tarfile.TarInfo) -> None:
        """Kept until `finish`: bounded in number, and with only the PAX records still needed."""
        if parts not in self.directories and len(self.directories) >= self.max_directories:
            raise InvalidArgumentError(f"layer has more than {self.max_directories} directories")
        member.pax_headers = {key: value for key, value in member.pax_headers.items() if key.startswith(XATTR_PAX)}
        self.directories[parts] = member

    def _whiteout(self, parent: int, name: str, member: tarfile.TarInfo) -> None:
        if not name or name in (".", "..") or name.startswith(WHITEOUT_PREFIX):
            return  # aufs bookkeeping (.wh..wh.plnk, ...): nothing for overlayfs
        found = _lstat(name, parent)
        if found is None:
            os.mknod(name, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=parent)
        elif stat.S_ISDIR(found.st_mode):  # deleted and re-created in this layer
            _mark_opaque(parent, name)

    def _make_room(self, parent: int, base: str, member: tarfile.TarInfo) -> bool:
        """Whether `base` must be created: False where a directory merges into one already there."""
        found = _lstat(base, parent)
        if found is None:
            return True
        if stat.S_ISDIR(found.st_mode):
            if not member.isdir():
                raise InvalidArgumentError(f"{describe(member)} would replace a directory of the same layer")
            self._pending(relative_parts(member.name), member)
            return False
        os.unlink(base, dir_fd=parent)  # never follows: removes the earlier entry itself
        if member.isdir() and stat.S_ISCHR(found.st_mode) and found.st_rdev == os.makedev(0, 0):
            self._create(None, member, parent, base)  # whiteout, then directory: hides the lower one
            _mark_opaque(parent, base)
            return False
        return True

    def _create(self, tar: tarfile.TarFile | None, member: tarfile.TarInfo, parent: int, base: str) -> None:
        if member.isreg():
            assert tar is not None
            _write_file(tar, member, parent, base)
        elif member.isdir():
            os.mkdir(base, 0o700, dir_fd=parent)
            self._pending(relative_parts(member.name), member)
        elif member.issym():
            os.symlink(member.linkname, base, dir_fd=parent)
            _set_owner_and_times(member, parent, base)
        elif member.islnk():
            self._hard_link(member, parent, base)
        elif member.ischr() or member.isfifo():  # a 0:0 char device is a whiteout (checked)
            kind = stat.S_IFCHR if member.ischr() else stat.S_IFIFO
            os.mknod(base, kind | 0o000, os.makedev(0, 0), dir_fd=parent)
            _set_node_metadata(member, parent, base, kind)
        else:
            raise InvalidArgumentError(f"{describe(member)} has a type no layer may hold")

    def _hard_link(self, member: tarfile.TarInfo, parent: int, base: str) -> None:
        """Only to a file or a symlink of this layer (linked as itself, never followed)."""
        parts = relative_parts(member.linkname)
        if not parts:
            raise InvalidArgumentError(f"{describe(member)} points at the layer root")
        source_dir = self.open_dir(parts[:-1], False, member)
        found = _lstat(parts[-1], source_dir)
        if found is None:
            raise InvalidArgumentError(f"{describe(member)} to {member.linkname[:200]!r}: no such entry")
        if not (stat.S_ISREG(found.st_mode) or stat.S_ISLNK(found.st_mode)):
            raise InvalidArgumentError(f"{describe(member)} to {member.linkname[:200]!r}: links only to files "
                                       "and symlinks are allowed")
        os.link(parts[-1], base, src_dir_fd=source_dir, dst_dir_fd=parent, follow_symlinks=False)

    def finish(self) -> None:
        """Directory metadata, latest seen first, each through its own descriptor (a directory's own
        metadata never changes its parent's times, so any order would do)."""
        for parts, member in reversed(self.directories.items()):
            _apply_fd_metadata(self.open_dir(parts, False, member), member)
            if len(self.dirs) > _OPEN_DIRS:
                self._close_dirs()


def _open_child(parent: int, name: str, create: bool, member: tarfile.TarInfo, parts: tuple[str, ...]) -> int:
    """One step down, never through a symlink; a directory made here (no entry of its own) is 0755."""
    made = create and _lstat(name, parent) is None
    if made:
        os.mkdir(name, 0o700, dir_fd=parent)
    try:
        child = os.open(name, _DIR_FLAGS, dir_fd=parent)
    except FileNotFoundError:
        raise InvalidArgumentError(f"{describe(member)}: {'/'.join(parts)[:200]!r} does not exist") from None
    except OSError as error:
        if error.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        found = _lstat(name, parent)
        what = "a symlink" if found is not None and stat.S_ISLNK(found.st_mode) else "a non-directory"
        raise InvalidArgumentError(f"{describe(member)}: {'/'.join(parts)[:200]!r} goes through {what}") from None
    if made:
        os.fchmod(child, 0o755)
    return child


def _lstat(name: str, parent: int) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _mark_opaque(parent: int, name: str) -> None:
    """The directory `name` (never followed) hides what the layers below hold at its path."""
    fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
    try:
        os.setxattr(fd, OPAQUE_XATTR, b"y")
    finally:
        os.close(fd)


def _write_file(tar: tarfile.TarFile, member: tarfile.TarInfo, parent: int, base: str) -> None:
    source = tar.extractfile(member)
    assert source is not None
    fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=parent)
    with os.fdopen(fd, "wb") as target:
        shutil.copyfileobj(source, target, 1 << 16)  # tarfile joins 16 KiB reads: 1 MiB chunks cost 4x the CPU
        target.flush()
        _apply_fd_metadata(target.fileno(), member)


def _apply_fd_metadata(fd: int, member: tarfile.TarInfo) -> None:
    """Owner, then mode (chown clears set-id bits and capabilities), xattrs, then times."""
    os.fchown(fd, member.uid, member.gid)
    os.fchmod(fd, member.mode & 0o7777)
    for name, value in xattrs(member).items():
        try:
            os.setxattr(fd, name, value)
        except OSError as error:
            raise InvalidArgumentError(f"{describe(member)}: xattr {name[:100]!r} refused: {error.strerror}") from None
    os.utime(fd, (member.mtime, member.mtime))


def _set_owner_and_times(member: tarfile.TarInfo, parent: int, base: str) -> None:
    os.chown(base, member.uid, member.gid, dir_fd=parent, follow_symlinks=False)
    os.utime(base, (member.mtime, member.mtime), dir_fd=parent, follow_symlinks=False)


def _set_node_metadata(member: tarfile.TarInfo, parent: int, base: str, kind: int) -> None:
    """A fifo or whiteout has no descriptor to write through (opening a fifo may block): its mode
    goes through an O_PATH descriptor of the node itself, checked to be the node just made."""
    os.chown(base, member.uid, member.gid, dir_fd=parent, follow_symlinks=False)
    fd = os.open(base, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
    try:
        if stat.S_IFMT(os.fstat(fd).st_mode) != kind:
            raise InvalidArgumentError(f"{describe(member)} changed while it was being made ({kind_of(member)})")
        os.chmod(f"/proc/self/fd/{fd}", member.mode & 0o777)
    finally:
        os.close(fd)
    os.utime(base, (member.mtime, member.mtime), dir_fd=parent, follow_symlinks=False)
