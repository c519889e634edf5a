"""DUCC's layout beside `.layers`: flattened chains and per-image records, and DUCC's chain ids.

    <base>/.chains/<hex[0:2]>/<hex>/       one image prefix flattened into a plain tree
                                           (deletions applied, no whiteouts): one lowerdir
    <base>/.metadata/images/<key>.json     reference -> manifest digest, layers, chains
    <base>/.metadata/manifests/<hex>/      manifest.json and config.json as pulled

Chain ids are DUCC's (chains.py, their one home, which the snapshotter reads chains with), not
containerd's (which hash uncompressed diff ids): a reader finds a chain from the layer digests
alone (the CRI labels carry those).

A chain directory exists only once complete: it is built in `.chains/<xx>/.tmp-*` and
renamed into place (chain_build.py), removed by renaming aside first (publish_gc.py).
"""

from __future__ import annotations

import os

from snapmux.adapters.cvmfs.chains import CHAINS_DIR, chain_dir, chain_ids

__all__ = ["CHAINS_DIR", "chain_dir", "chain_ids", "metadata_dir"]  # chains.py is the one home of the ids

LAYERS_DIR = ".layers"
METADATA_DIR = ".metadata"
IMAGE_RECORDS_DIR = "images"
MANIFESTS_DIR = "manifests"
LOCK_PREFIX = ".lock-"
"""`<dir>/.lock-<hex>` beside the layer or chain it guards (locks.py)."""
GC_LOCK = ".gc.lock"
"""`.metadata/.gc.lock`: the target-wide lock of garbage collection."""


def metadata_dir(base: str, *parts: str) -> str:
    return os.path.join(base, METADATA_DIR, *parts)
