"""What a layer tar may hold, decided before anything is written for an entry.

The tar is untrusted input read as root. tarfile parses any header it is given, and some
headers are resource bombs: a PAX or GNU long-name header declaring gigabytes is read into
memory whole, chained extended headers recurse, GNU sparse maps expand a few bytes into a
file of any size. `entries()` reads the stream with those bounded (`LayerLimits`) and keeps
no per-entry state (tarfile would otherwise remember every member), and `check()` refuses
what no image builder writes and what would be unsafe on the host: device nodes other than
the 0/0 whiteout, sparse files, names the kernel cannot hold, set-id files others may
write, and extended attributes outside `user.*`, `security.capability` and the POSIX ACLs, and
overlayfs's own in any namespace (`trusted.overlay.*`, or `user.overlay.*` on a `userxattr` mount,
would let a layer steer overlayfs: redirects, metacopy, opacity).
"""

from __future__ import annotations

import os
import stat
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from snapmux.adapters.cvmfs.layer_compression import open_layer
from snapmux.adapters.cvmfs.whiteout_names import OVERLAY_XATTR_PREFIXES
from snapmux.domain.errors import InvalidArgumentError

XATTR_PAX = "SCHILY.xattr."
ALLOWED_XATTRS = ("user.", "security.capability", "system.posix_acl_access", "system.posix_acl_default")
NAME_MAX = 255
PATH_MAX = 4096
_NO_ID = 2**32 - 1
"""(uid_t)-1 means "leave unchanged" to chown; anything from it up is no owner."""
_TIME_LIMIT = 2**40
"""Seconds (about 35,000 years either way): what time_t and every filesystem can hold."""
_EXTENDED = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE, tarfile.GNUTYPE_LONGNAME,
             tarfile.GNUTYPE_LONGLINK)
_KINDS = {tarfile.DIRTYPE: "directory", tarfile.SYMTYPE: "symlink", tarfile.LNKTYPE: "hard link",
          tarfile.CHRTYPE: "char device", tarfile.BLKTYPE: "block device", tarfile.FIFOTYPE: "fifo"}


@dataclass(frozen=True)
class LayerLimits:
    """Bounds on one layer: what its content may cost, whatever its compressed size."""

    max_bytes: int = 128 << 30
    """Sum of the regular files' sizes (a gzip bomb expands about 1000x)."""
    max_entries: int = 5_000_000
    max_directories: int = 1_000_000
    """Directory metadata waits in memory until the layer's end (a few hundred bytes each)."""
    max_header: int = 1 << 20
    """One PAX or GNU long-name header, read into memory whole."""
    max_header_chain: int = 8
    max_depth: int = 256
    """Path components: deeper trees cannot be removed by recursive tools (shutil.rmtree, os.walk),
    so a failed publish could not clean up after itself."""


def describe(member: tarfile.TarInfo) -> str:
    """How an entry is named in errors: repr, so newlines or escapes in a name stay visible."""
    return f"layer entry {member.name[:200]!r} ({kind_of(member)})"


def kind_of(member: tarfile.TarInfo) -> str:
    return "file" if member.isreg() else _KINDS.get(member.type, f"type {member.type!r}")


class _State(threading.local):
    limits = LayerLimits()
    depth = 0


_state = _State()


class BoundedTarInfo(tarfile.TarInfo):
    """Refuses oversized and deeply chained extended headers, and sparse maps, before tarfile
    reads them (the hooks are tarfile's per-header dispatch, stable since Python 3.2)."""

    def _proc_member(self, tar: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type == tarfile.GNUTYPE_SPARSE:
            raise InvalidArgumentError(_sparse(self.name))
        if self.type not in _EXTENDED:
            return super()._proc_member(tar)  # type: ignore[misc]
        if self.size > _state.limits.max_header:
            raise InvalidArgumentError(f"layer tar has a {self.size}-byte extended header "
                                       f"(at most {_state.limits.max_header})")
        if _state.depth >= _state.limits.max_header_chain:
            raise InvalidArgumentError(f"layer tar chains more than {_state.limits.max_header_chain} extended headers")
        _state.depth += 1
        try:
            return super()._proc_member(tar)  # type: ignore[misc]
        finally:
            _state.depth -= 1

    def _proc_gnusparse_10(self, next: tarfile.TarInfo, pax_headers: dict, tar: tarfile.TarFile) -> None:
        raise InvalidArgumentError(_sparse(next.name))


def entries(stream: IO[bytes], limits: LayerLimits) -> Iterator[tuple[tarfile.TarFile, tarfile.TarInfo]]:
    """Each entry of a (zstd, gzip or plain) layer tar, checked; the layer's totals are bounded."""
    _state.limits, total, count = limits, 0, 0
    try:
        tar_stream, mode = open_layer(stream)
        with tarfile.open(fileobj=tar_stream, mode=mode, tarinfo=BoundedTarInfo) as tar:
            while (member := tar.next()) is not None:
                tar.members.clear()  # stream mode needs none of them back; a million would stay in memory
                count += 1
                total += member.size if member.isreg() else 0
                if count > limits.max_entries:
                    raise InvalidArgumentError(f"layer has more than {limits.max_entries} entries")
                if total > limits.max_bytes:
                    raise InvalidArgumentError(f"layer unpacks to more than {limits.max_bytes} bytes of files")
                check(member, limits)
                yield tar, member
    except tarfile.TarError as error:
        raise InvalidArgumentError(f"layer is not a readable tar: {error}") from None


def check(member: tarfile.TarInfo, limits: LayerLimits) -> None:
    """Refuses an entry that is unsafe or meaningless in a layer, naming it."""
    _check_name(member.name, member)
    if member.issym() or member.islnk():
        _check_name(member.linkname, member, "link target")
        if not member.linkname:
            raise InvalidArgumentError(f"{describe(member)} has an empty link target")
    if member.name.count("/") >= limits.max_depth:
        raise InvalidArgumentError(f"{describe(member)} is more than {limits.max_depth} directories deep")
    if member.sparse is not None:
        raise InvalidArgumentError(_sparse(member.name))
    _check_node(member)
    _check_xattrs(member)


def _check_node(member: tarfile.TarInfo) -> None:
    """Type, owner, times and mode: what the kernel will be asked to create."""
    if member.isblk() or (member.ischr() and (member.devmajor, member.devminor) != (0, 0)):
        raise InvalidArgumentError(f"{describe(member)} is a device node {member.devmajor}:{member.devminor}; "
                                   "a layer may hold only 0:0 whiteouts")
    for what, value in (("uid", member.uid), ("gid", member.gid)):
        if type(value) is not int or not 0 <= value < _NO_ID:
            raise InvalidArgumentError(f"{describe(member)} has {what} {str(value)[:30]}")
    if not -_TIME_LIMIT < member.mtime < _TIME_LIMIT:  # also NaN: a PAX mtime is any float
        raise InvalidArgumentError(f"{describe(member)} has mtime {str(member.mtime)[:30]}")
    setid = member.mode & (stat.S_ISUID | stat.S_ISGID)
    if member.isreg() and setid and member.mode & 0o022:
        raise InvalidArgumentError(f"{describe(member)} is set-id (mode {member.mode:o}) and writable by others")


def _check_xattrs(member: tarfile.TarInfo) -> None:
    for name in xattrs(member):
        if not name.startswith(ALLOWED_XATTRS) or name.startswith(OVERLAY_XATTR_PREFIXES):
            raise InvalidArgumentError(f"{describe(member)} carries xattr {name[:100]!r}; a layer may set only "
                                       f"{', '.join(ALLOWED_XATTRS)}")
        if not (member.isreg() or member.isdir() or member.islnk()):
            raise InvalidArgumentError(f"{describe(member)} carries xattr {name[:100]!r}; only files and "
                                       "directories may have them")


def xattrs(member: tarfile.TarInfo) -> dict[str, bytes]:
    return {key[len(XATTR_PAX):]: value.encode("utf-8", "surrogateescape")
            for key, value in member.pax_headers.items() if key.startswith(XATTR_PAX)}


def _sparse(name: str) -> str:
    return f"layer entry {name[:200]!r} is a sparse file; no image builder writes those"


def _check_name(name: str, member: tarfile.TarInfo, what: str = "name") -> None:
    if "\x00" in name:
        raise InvalidArgumentError(f"{describe(member)}: its {what} holds a NUL byte")
    encoded = os.fsencode(name)
    if len(encoded) >= PATH_MAX:
        raise InvalidArgumentError(f"{describe(member)}: its {what} is {len(encoded)} bytes (at most {PATH_MAX - 1})")
    if what == "name" and any(len(part) > NAME_MAX for part in encoded.split(b"/")):
        raise InvalidArgumentError(f"{describe(member)}: a path component is longer than {NAME_MAX} bytes")
