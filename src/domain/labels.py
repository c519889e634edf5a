"""containerd's snapshot label names, in one place.

These are containerd's (and its CRI plugin's and stargz-snapshotter's) wire
vocabulary, not ours: the spelling must match theirs byte for byte.
"""

REF_LABEL = "containerd.io/snapshot.ref"
"""Set by containerd on the Prepare of a layer: the layer's chain ID, asking for a remote snapshot."""

REMOTE_LABEL = "containerd.io/snapshot/remote"
"""Set by a remote snapshotter on a snapshot it provides itself (containerd then skips the download)."""

CRI_DIGEST_LABEL = "containerd.io/snapshot/cri.layer-digest"
"""Set by CRI's pull on each layer's Prepare: the layer's compressed digest."""

STARGZ_DIGEST_LABEL = "containerd.io/snapshot/remote/stargz.digest"
"""Set by ctr-remote (stargz's appender) on each layer's Prepare: the layer's digest."""

CRI_IMAGE_LAYERS_LABEL = "containerd.io/snapshot/cri.image-layers"
"""Set by CRI's pull: comma-separated digests of this layer and the ones above it in the image."""

STARGZ_IMAGE_LAYERS_LABEL = "containerd.io/snapshot/remote/stargz.layers"
"""Set by ctr-remote: the same list as CRI's image-layers, under stargz's name."""

CHAIN_LABEL = "containerd.io/snapshot/cvmfs.chain"
"""snapmux's own, on a layer cvmfs-snapshotter adopted from DUCC's flattened chain: the chain
directory (what restore() checks, and what an operator sees)."""

GC_ROOT_LABEL = "containerd.io/gc.root"
"""Keeps a snapshot from containerd's garbage collector."""
