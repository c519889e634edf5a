"""How a layer blob is compressed, told by its first bytes, as containerd's DecompressStream does.

A manifest's media type (`tar`, `tar+gzip`, `tar+zstd`, docker's `diff.tar.gzip`) is a claim by
an untrusted source; the magic number is what the bytes are. Plain and gzip tars are left to
tarfile (`r|gz`, `r|`); zstd (`application/vnd.oci.image.layer.v1.tar+zstd`) is
decompressed here with the standard library's `compression.zstd` (Python >= 3.14) or its
backport. bzip2 and xz, which tarfile would read, are refused by name: containerd reads
neither, so no pull could have made such a tree. The caller hashes the compressed bytes beneath this, so the digest check is
unchanged, and LayerLimits bound what the tar declares whatever the compression.

A zstd frame names the window it needs; the decoder refuses one above 2**27 bytes (libzstd's
own default, what `zstd` and containerd accept without `--long`), so a hostile frame costs at
most 128 MiB of memory.
"""

from __future__ import annotations

import sys
from typing import IO

from snapmux.domain.errors import InvalidArgumentError

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
GZIP_MAGIC = b"\x1f\x8b"
REFUSED_MAGIC = {b"BZh": "bzip2", b"\xfd7zXZ": "xz"}
_SKIPPABLE, _SKIPPABLE_MASK = 0x184D2A50, 0xFFFFFFF0
"""A skippable frame (metadata, e.g. zstd:chunked's) may come first: zstd too, as containerd says."""
ZSTD_WINDOW_LOG_MAX = 27
_OPTIONS = {zstd.DecompressionParameter.window_log_max: ZSTD_WINDOW_LOG_MAX}


def open_layer(stream: IO[bytes]) -> tuple[IO[bytes], str]:
    """The layer's tar stream and the tarfile mode to read it with."""
    head = stream.read(6)
    replayed = _Replayed(head, stream)
    if _is_zstd(head[: len(ZSTD_MAGIC)]):
        return _ZstdReader(replayed), "r|"  # a tar inside, nothing else: no zstd of gzip of ...
    for magic, name in REFUSED_MAGIC.items():
        if head.startswith(magic):
            raise InvalidArgumentError(f"layer is {name}-compressed: containerd unpacks only plain, gzip and zstd tars")
    return replayed, "r|gz" if head.startswith(GZIP_MAGIC) else "r|"  # type: ignore[return-value]


def _is_zstd(head: bytes) -> bool:
    return head == ZSTD_MAGIC or (len(head) == 4 and int.from_bytes(head, "little") & _SKIPPABLE_MASK == _SKIPPABLE)


class _Replayed:
    """`stream` with the bytes already read from it put back in front."""

    def __init__(self, head: bytes, stream: IO[bytes]) -> None:
        self._head, self._stream = head, stream

    def read(self, size: int = -1) -> bytes:
        if not self._head:
            return self._stream.read(size)
        if 0 <= size <= len(self._head):
            data, self._head = self._head[:size], self._head[size:]
            return data
        data, self._head = self._head, b""
        return data + self._stream.read(-1 if size < 0 else size - len(data))


class _ZstdReader:
    """Decompressed reads; a corrupt or oversized-window frame is a bad layer, not a crash."""

    def __init__(self, compressed: _Replayed) -> None:
        self._file = zstd.ZstdFile(compressed, options=_OPTIONS)  # type: ignore[arg-type]

    def read(self, size: int = -1) -> bytes:
        try:
            return self._file.read(size)
        except (zstd.ZstdError, EOFError) as error:
            raise InvalidArgumentError(f"layer is not readable zstd: {error}") from None
