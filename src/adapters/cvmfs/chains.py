"""DUCC's flattened chains: `<base>/.chains/<id[0:2]>/<id>`, one directory per image prefix.

DUCC (cvmfs/ducc `GenerateChainFromManifest`, `ChainPath`) ingests, beside each layer, the
union of the image's layers up to it with deletions applied (its "sneaky" overlay turns `.wh.`
entries into real deletions), so one directory is the whole filesystem below and including that
layer. Its ("legacy") chain id is built from the compressed layer digests of the manifest:

    id[0] = digest[0]
    id[i] = "sha256:" + sha256("<hex of id[i-1]> <hex of digest[i]>")

A chain still being written is flagged by `<base>/.dirty-chains/<id>`; it is never served.
This module is the one home of that id: the snapshotter reads chains with it, a publisher
writing chains must use it too. Nothing here writes to the layout.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable

from snapmux.adapters.cvmfs.digests import SHA256, parse_digest

CHAINS_DIR = ".chains"
DIRTY_CHAINS_DIR = ".dirty-chains"


def _hex(digest: str) -> str:
    """Checked: a chain id (or a layer digest, the first chain id) becomes a path."""
    return parse_digest(digest if digest.startswith(SHA256) else SHA256 + digest)


def next_chain_id(previous: str, layer_digest: str) -> str:
    """The chain id of a layer on top of the chain `previous` ("" for the image's first layer)."""
    if not previous:
        return SHA256 + _hex(layer_digest)
    text = f"{_hex(previous)} {_hex(layer_digest)}"
    return SHA256 + hashlib.sha256(text.encode()).hexdigest()


def chain_ids(layer_digests: Iterable[str]) -> list[str]:
    """Every prefix's chain id, bottom layer first (DUCC's `GenerateChainFromManifest`)."""
    found, previous = [], ""
    for digest in layer_digests:
        previous = next_chain_id(previous, digest)
        found.append(previous)
    return found


def following_chain_ids(chain_id: str, layers: Iterable[str]) -> list[str]:
    """The chain ids of `layers` (this layer first, then those above it), given this layer's
    `chain_id`; empty when it is unknown."""
    layers = list(layers)
    if not chain_id or not layers:
        return []
    found = [chain_id]
    for digest in layers[1:]:
        found.append(next_chain_id(found[-1], digest))
    return found


def chain_dir(base: str, chain_id: str) -> str:
    hex_id = _hex(chain_id)
    return os.path.join(base, CHAINS_DIR, hex_id[:2], hex_id)


def dirty_flag(base: str, chain_id: str) -> str:
    return os.path.join(base, DIRTY_CHAINS_DIR, _hex(chain_id))


def usable_chain(base: str, chain_id: str) -> str | None:
    """Blocking, two stats: the chain directory if complete (present, not flagged dirty)."""
    path = chain_dir(base, chain_id)
    if os.path.isdir(path) and not os.path.lexists(dirty_flag(base, chain_id)):
        return path
    return None
