"""A CVMFS layout built the way DUCC builds unpacked.cern.ch, for tests and benchmarks.

DUCC ingests each layer tar with `cvmfs_server ingest --catalog`, whose tar reader does not
interpret whiteouts: `.wh.<name>` and `.wh..wh..opq` stay in `.layers/<xx>/<hex>/layerfs` as
plain empty files, and the catalog option leaves a `.cvmfscatalog` at the top of each layerfs.
Here each layer is extracted with plain `tar -x` (as root: owners and modes kept), the same
way. With `chains=True` it also writes DUCC's flattened chains: `.chains/<xx>/<id>` is the
previous chain with the layer applied, deletions interpreted (DUCC's sneaky overlay), plus a
`.cvmfscatalog`; ids from `snapmux.adapters.cvmfs.chains` (DUCC's scheme).
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import tarfile
from collections.abc import Sequence
from pathlib import Path

from snapmux.adapters.cvmfs.chains import chain_dir, chain_ids
from snapmux.adapters.cvmfs.whiteout_names import OPAQUE_MARKERS, WHITEOUT_PREFIX
from tests.support.images import (
    BuiltImage,
    Entry,
    busybox_base,
    directory,
    file,
    opaque,
    symlink,
    whiteout,
    write_image,
    write_layer,
)

CATALOG = ".cvmfscatalog"
OPAQUE = OPAQUE_MARKERS[0]


def blob_path(image: BuiltImage, digest: str) -> str:
    return os.path.join(image.layout, "blobs", "sha256", digest.split(":", 1)[1])


def layerfs_path(base: Path, digest: str) -> Path:
    hex_digest = digest.split(":", 1)[1]
    return base / ".layers" / hex_digest[:2] / hex_digest / "layerfs"


def _touch_catalog(directory_path: Path) -> None:
    (directory_path / CATALOG).touch(mode=0o644)


def ingest_layer(image: BuiltImage, digest: str, base: Path) -> Path:
    """One layer as `cvmfs_server ingest --catalog` leaves it: extracted as is, whiteouts kept."""
    target = layerfs_path(base, digest)
    if target.is_dir():
        return target
    target.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-z", "-f", blob_path(image, digest), "-C", str(target)], check=True)
    _touch_catalog(target)
    return target


def _members(image: BuiltImage, digest: str) -> list[str]:
    with gzip.open(blob_path(image, digest), "rb") as raw, tarfile.open(fileobj=raw, mode="r|") as tar:
        return [member.name for member in tar]


def _apply_deletions(chain: Path, names: Sequence[str]) -> None:
    """What the layer deletes from the layers below: `.wh.x` removes x, an opaque marker empties
    its directory (of the lower layers' entries: the layer's own are extracted afterwards)."""
    for name in names:
        head, _, base = name.rstrip("/").rpartition("/")
        parent = chain / head
        if base == OPAQUE:
            if parent.is_dir() and not parent.is_symlink():
                for child in list(parent.iterdir()):
                    _remove(child)
        elif base.startswith(WHITEOUT_PREFIX):
            _remove(parent / base[len(WHITEOUT_PREFIX):])


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.is_symlink() or path.exists():
        path.unlink()


def build_chain(image: BuiltImage, base: Path, index: int, hardlink: bool = False) -> Path:
    """`.chains/<xx>/<id>` of the image's first `index + 1` layers (the previous ones first).

    `hardlink`: copy the previous chain as hard links (fast, for big benchmark images); only
    right when no layer rewrites a file of a lower one."""
    ids = chain_ids([layer.digest for layer in image.layers])
    target = Path(chain_dir(str(base), ids[index]))
    if target.is_dir():
        return target
    previous = build_chain(image, base, index - 1, hardlink) if index > 0 else None
    staged = target.with_name(target.name + ".tmp")
    staged.parent.mkdir(parents=True, exist_ok=True)
    _touch_catalog(staged.parent)
    if previous is not None:
        subprocess.run(["cp", "-al" if hardlink else "-a", str(previous), str(staged)], check=True)
    else:
        staged.mkdir()
    digest = image.layers[index].digest
    _apply_deletions(staged, _members(image, digest))
    subprocess.run(["tar", "-x", "-z", "-f", blob_path(image, digest), "-C", str(staged), f"--exclude={WHITEOUT_PREFIX}*"],
                   check=True)
    _touch_catalog(staged)
    staged.rename(target)
    return target


def ducc_layout(image: BuiltImage, base: Path, chains: bool = False) -> None:
    """Every layer of `image` ingested under `base`, and with `chains` every chain too."""
    for layer in image.layers:
        ingest_layer(image, layer.digest, base)
    if chains:
        build_chain(image, base, len(image.layers) - 1)


DUCC_IMAGE_LAYERS: list[list[Entry]] = [
    [*busybox_base(), directory("data"), file("data/keep.txt", "kept\n"), file("data/gone.txt", "gone\n"),
     directory("data/dir"), file("data/dir/old.txt", "old\n"), directory("data/tree"), directory("data/tree/a"),
     file("data/tree/a/b.txt", "b\n"), directory("data/private", 0o700), file("data/private/secret", "s\n", 0o600),
     symlink("data/link", "keep.txt"), file("data/tool", "#!/bin/sh\n", 0o755)],
    [whiteout("data/gone.txt"), whiteout("data/link"), file("data/one.txt", "layer 1\n"),
     directory("data/tree/a"), whiteout("data/tree/a/b.txt"), file("data/tree/a/c.txt", "c\n")],
    [opaque("data/dir"), directory("data/dir"), file("data/dir/new.txt", "new\n"), whiteout("data/tree"),
     file("data/one.txt", "layer 2 rewrote it\n", 0o640), directory("data/private", 0o750)],
    [file("data/three.txt", "layer 3\n"), directory("data/tree"), file("data/tree/back.txt", "back\n")],
    [whiteout("data/three.txt"), file("data/four.txt", "layer 4\n")],
]
"""Deleted files, a deleted directory, an opaque directory, whiteouts in adjacent layers
(their shadows merge), a clean layer between, changed modes and a symlink."""

LISTING_SCRIPT = (
    "cd / && /bin/busybox find . -xdev | /bin/busybox sort | /bin/busybox xargs /bin/busybox stat -c '%n %F %a %u %g'"
    " && /bin/busybox find . -xdev -type f | /bin/busybox sort | /bin/busybox xargs /bin/busybox sha256sum"
    " && /bin/busybox find . -xdev -type l | /bin/busybox sort | /bin/busybox xargs /bin/busybox stat -c '%N'"
)
"""Run in a container: every path with its type, mode and owner, every file's content hash,
every symlink's target; equal listings mean equal filesystems (times and sizes of directories
aside, which differ between any two unpacks)."""


def ducc_image(layout: str, tag: str = "v1", variant: str = "") -> BuiltImage:
    """An image of DUCC_IMAGE_LAYERS; `variant` changes every layer's digest."""
    if os.path.exists(layout):
        shutil.rmtree(layout)
    layers = [[*entries, file(f"etc/variant-{index}", variant)] if variant else entries
              for index, entries in enumerate(DUCC_IMAGE_LAYERS)]
    descriptors = [write_layer(layout, entries) for entries in layers]
    return write_image(layout, tag, descriptors, ["/bin/sh", "-c", LISTING_SCRIPT])


def deep_image(layout: str, depth: int, tag: str = "v1") -> BuiltImage:
    """busybox, then `depth - 1` layers, each adding two files and deleting one of the layer below."""
    if os.path.exists(layout):
        shutil.rmtree(layout)
    descriptors = [write_layer(layout, [*busybox_base(), directory("deep"), file("deep/gone-0", "0\n")])]
    for index in range(1, depth):
        entries = [directory("deep"), file(f"deep/keep-{index}", f"{index}\n"), file(f"deep/gone-{index}", "x\n"),
                   whiteout(f"deep/gone-{index - 1}")]
        descriptors.append(write_layer(layout, entries))
    return write_image(layout, tag, descriptors, ["/bin/sh", "-c", LISTING_SCRIPT])
