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

import logging
import os

from snapmux.adapters.cvmfs.chains import CHAINS_DIR, chain_dir, chain_ids
from snapmux.adapters.durable import remove_entry

log = logging.getLogger(__name__)

__all__ = ["CHAINS_DIR", "chain_dir", "chain_ids", "metadata_dir"]  # chains.py is the one home of the ids

LAYERS_DIR = ".layers"
METADATA_DIR = ".metadata"
IMAGE_RECORDS_DIR = "images"
MANIFESTS_DIR = "manifests"
LOCK_PREFIX = ".lock-"
"""`<dir>/.lock-<hex>` beside the layer or chain it guards (locks.py)."""
GC_LOCK = ".gc.lock"
"""`.metadata/.gc.lock`: the target-wide lock of garbage collection."""
TMP_PREFIX = ".tmp-"
"""`<dir>/.tmp-<hex>-*` beside a layer or chain being built, and what nothing else reads."""
GC_ASIDE_PREFIX = f"{TMP_PREFIX}gc-"
"""`<dir>/.tmp-gc-<hex>-*`: a layer or chain the collector renamed aside to remove it."""


def metadata_dir(base: str, *parts: str) -> str:
    return os.path.join(base, METADATA_DIR, *parts)


def scratch_prefix(hex_digest: str) -> str:
    """What a layer's or chain's scratch is named by (and what `remove_leftovers` removes)."""
    return f"{TMP_PREFIX}{hex_digest}-"


def remove_leftovers(folder: str, hex_digest: str) -> None:
    """Scratch an interrupted run left in `folder` for `hex_digest`, and nothing else: call it
    holding that entry's lock (a live publisher of another entry keeps its own scratch)."""
    prefix = scratch_prefix(hex_digest)
    for name in os.listdir(folder) if os.path.isdir(folder) else []:
        if name.startswith(prefix):
            path = os.path.join(folder, name)
            log.info("removing leftover of an interrupted publish: %s", path)
            remove_entry(path)
