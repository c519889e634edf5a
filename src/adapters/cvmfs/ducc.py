"""DUCC's layout beside `.layers`: flattened chains and per-image records, and DUCC's chain ids.

    <base>/.chains/<hex[0:2]>/<hex>/       one image prefix flattened into a plain tree
                                           (deletions applied, no whiteouts): one lowerdir
    <base>/.metadata/images/<key>.json     reference -> manifest digest, layers, chains
    <base>/.metadata/manifests/<hex>/      manifest.json and config.json as pulled

Chain ids are DUCC's, not containerd's (which hash uncompressed diff ids), as its
`GenerateChainFromManifest` computes them: the first is the first layer's compressed digest
itself, each next one `sha256:` + sha256 of `"<previous id hex> <layer digest hex>"`. So a
reader can find a chain from the layer digests alone (the CRI labels carry those).

A chain directory exists only once complete: it is built in `.chains/<xx>/.tmp-*` and
renamed into place (chain_build.py), removed by renaming aside first (publish_gc.py).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

from snapmux.adapters.cvmfs.layers import parse_digest

LAYERS_DIR = ".layers"
CHAINS_DIR = ".chains"
METADATA_DIR = ".metadata"
IMAGE_RECORDS_DIR = "images"
MANIFESTS_DIR = "manifests"
LOCK_PREFIX = ".lock-"
"""`<dir>/.lock-<hex>` beside the layer or chain it guards (locks.py)."""
GC_LOCK = ".gc.lock"
"""`.metadata/.gc.lock`: the target-wide lock of garbage collection."""


def chain_ids(layer_digests: Sequence[str]) -> list[str]:
    """DUCC's chain id of every prefix of the image's layers, bottom first, as `sha256:<hex>`."""
    found: list[str] = []
    for digest in layer_digests:
        layer_hex = parse_digest(digest)
        if not found:
            found.append(digest)
            continue
        text = f"{parse_digest(found[-1])} {layer_hex}"
        found.append("sha256:" + hashlib.sha256(text.encode()).hexdigest())
    return found


def chain_dir(base: str, chain_hex: str) -> str:
    parse_digest(f"sha256:{chain_hex}")
    return os.path.join(base, CHAINS_DIR, chain_hex[:2], chain_hex)


def metadata_dir(base: str, *parts: str) -> str:
    return os.path.join(base, METADATA_DIR, *parts)
