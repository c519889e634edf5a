"""Registry blobs spooled to a named part file, so an interrupted download resumes.

`.layers/<xx>/.part-<hex>` is written only by the holder of the layer's lock (locks.py). A
publisher killed mid-download leaves it; the next one asks for the rest (`Range: bytes=N-`,
answered 206) instead of starting again, and a registry that ignores the range (200) just
sends it all again. No blob is read past its descriptor's size. Nothing trusts the spool: the layer's digest is checked while it is
extracted from it (publish.py), and a spool that fails that check is deleted. The part file
goes once the layer is in place.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import IO

from snapmux.adapters.cvmfs.layers import parse_digest
from snapmux.adapters.cvmfs.oci import RegistrySource
from snapmux.domain.errors import InvalidArgumentError, NotFoundError

PART_PREFIX = ".part-"


def part_path(layers_dir: str, hex_digest: str) -> str:
    return os.path.join(layers_dir, hex_digest[:2], PART_PREFIX + hex_digest)


class ResumingOpener:
    """`open_blob` for LayoutPublisher.publish_layer: resumes `<part>` and yields it from the start."""

    def __init__(self, source: RegistrySource, layers_dir: str, sizes: dict[str, int],
                 progress: Callable[[str, int], None] | None = None) -> None:
        self.source, self.layers_dir, self.sizes = source, layers_dir, sizes
        self.progress = progress or (lambda digest, done: None)
        """Told each chunk's length as it is spooled (and, first, what a resumed spool had)."""

    @contextlib.contextmanager
    def __call__(self, digest: str) -> Iterator[IO[bytes]]:
        path = part_path(self.layers_dir, parse_digest(digest))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self._fill(digest, path)
        ok = False
        try:
            with open(path, "rb") as spool:
                yield spool
            ok = True
        finally:
            if not ok:  # bad data (digest, tar): the next try starts from nothing
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)

    def _fill(self, digest: str, path: str) -> None:
        have = os.path.getsize(path) if os.path.exists(path) else 0
        if self.sizes.get(digest) is not None and have >= self.sizes[digest]:
            self.progress(digest, have)
            return
        headers = {"Range": f"bytes={have}-"} if have else {}
        url = f"{self.source.repo}/blobs/sha256:{parse_digest(digest)}"
        with self.source.client.stream("GET", url, headers=headers) as response:
            if response.status_code == 404:
                raise NotFoundError(f"registry: blob {digest} not found")
            response.raise_for_status()
            limit = self.sizes.get(digest)
            if response.status_code == 206:
                self.progress(digest, have)
            with open(path, "ab" if response.status_code == 206 else "wb") as spool:
                for chunk in response.iter_bytes(1 << 20):
                    spool.write(chunk)
                    self.progress(digest, len(chunk))
                    if limit is not None and spool.tell() > limit:  # a blob that never ends
                        spool.close()
                        os.unlink(path)
                        raise InvalidArgumentError(f"registry: blob {digest} is longer than its {limit} bytes")
                spool.flush()
                os.fsync(spool.fileno())


def done(layers_dir: str, hex_digest: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(part_path(layers_dir, hex_digest))
