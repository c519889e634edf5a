"""Crafted layer tars (raw tarfile headers, whatever a builder would refuse to write) and a
"host" sentinel tree whose every byte and attribute a test can compare before and after.

A hostile layer points symlinks at the sentinel; `Sentinel.snapshot()` records, for each path
in it (the root included), lstat's type, mode, owner, times, size, the content hash and the
extended attributes, so "nothing outside the target changed" is one equality.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass

from tests.support.images import LAYER_GZIP, Descriptor


def info(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, data: bytes = b"", linkname: str = "",
         xattrs: dict[str, str] | None = None, **fields: object) -> tuple[tarfile.TarInfo, bytes]:
    member = tarfile.TarInfo(name)
    member.type, member.mode, member.linkname, member.mtime = kind, mode, linkname, 1_600_000_000
    member.size = len(data) if kind == tarfile.REGTYPE else 0
    member.pax_headers = {f"SCHILY.xattr.{key}": value for key, value in (xattrs or {}).items()}
    for key, value in fields.items():
        setattr(member, key, value)
    return member, data


def tar_bytes(members: Iterable[tuple[tarfile.TarInfo, bytes]], compress: bool = False,
              format: int = tarfile.PAX_FORMAT) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=format) as tar:
        for member, data in members:
            tar.addfile(member, io.BytesIO(data) if member.isreg() else None)
    raw = out.getvalue()
    return gzip.compress(raw, compresslevel=1, mtime=0) if compress else raw


def raw_header(name: bytes, kind: bytes, size: int, body: bytes = b"") -> bytes:
    """One ustar header block by hand (tarfile cannot write lies such as a size it will not send)."""
    fields = [name.ljust(100, b"\0"), b"0000644\0", b"0000000\0", b"0000000\0", b"%011o\0" % size,
              b"%011o\0" % 1_600_000_000, b" " * 8, kind, b"".ljust(100, b"\0"), b"ustar\x0000"]
    block = b"".join(fields).ljust(512, b"\0")
    checksum = b"%06o\0 " % sum(block)
    block = block[:148] + checksum + block[156:]
    padded = body + b"\0" * (-len(body) % 512)
    return block + padded


def pax_record(key: str, value: str) -> bytes:
    body = f" {key}={value}\n".encode()
    length = len(body)
    while len(str(length + len(str(length))).encode()) + len(body) != length:
        length = len(str(length).encode()) + len(body)
    return f"{length}{body.decode()}".encode()


@dataclass
class Sentinel:
    """A small host tree (files, a directory, a symlink, set modes and times, an xattr)."""

    root: str

    @classmethod
    def create(cls, root: str) -> Sentinel:
        os.makedirs(os.path.join(root, "dir"))
        for name, mode in (("file", 0o644), ("secret", 0o600), ("dir/inner", 0o640)):
            path = os.path.join(root, name)
            with open(path, "w") as out:
                out.write(f"sentinel {name}\n")
            os.chmod(path, mode)
            os.utime(path, (1_500_000_000, 1_500_000_000))
        os.symlink("file", os.path.join(root, "link"))
        os.setxattr(os.path.join(root, "file"), "trusted.sentinel", b"1")
        os.utime(os.path.join(root, "dir"), (1_500_000_000, 1_500_000_000))
        return cls(root)

    def path(self, name: str = "") -> str:
        return os.path.join(self.root, name) if name else self.root

    def snapshot(self) -> dict[str, tuple]:
        found = {}
        for dirpath, dirnames, filenames in os.walk(self.root):
            for name in ["", *dirnames, *filenames] if dirpath == self.root else [*dirnames, *filenames]:
                path = os.path.join(dirpath, name) if name else dirpath
                found[os.path.relpath(path, self.root)] = _describe(path)
        return found


def _describe(path: str) -> tuple:
    st = os.lstat(path)
    content = ""
    if stat.S_ISREG(st.st_mode):
        with open(path, "rb") as handle:
            content = hashlib.sha256(handle.read()).hexdigest()
    elif stat.S_ISLNK(st.st_mode):
        content = os.readlink(path)
    attributes = tuple(sorted((name, os.getxattr(path, name, follow_symlinks=False))
                              for name in os.listxattr(path, follow_symlinks=False)))
    return (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns,
            st.st_ctime_ns, st.st_size, st.st_nlink, content, attributes)


def write_raw_layer(layout: str, raw_tar: bytes) -> Descriptor:
    """A crafted tar as a gzip layer blob of an OCI layout (for `images.write_image`)."""
    blobs = os.path.join(layout, "blobs", "sha256")
    os.makedirs(blobs, exist_ok=True)
    blob = gzip.compress(raw_tar, compresslevel=1, mtime=0)
    digest = hashlib.sha256(blob).hexdigest()
    with open(os.path.join(blobs, digest), "wb") as out:
        out.write(blob)
    return Descriptor(LAYER_GZIP, f"sha256:{digest}", len(blob), f"sha256:{hashlib.sha256(raw_tar).hexdigest()}")
