"""The names by which layers and overlayfs mark deletions, and the publisher's marker file.

OCI layers delete with `.wh.<name>` files and make a directory opaque with `.wh..wh..opq`
(unpacked.cern.ch also writes `.wh..opq`); other `.wh..wh.*` names are aufs bookkeeping.
overlayfs honours only its own: a 0/0 char device and the `overlay.opaque` xattr, in the
`trusted.` namespace or, on a `userxattr` mount, the `user.` one. One home for these names,
so the extractor, the shadow scanner, the chain builder and the layout checks agree (overlayfs's
own xattr namespaces are the overlay snapshotter's: `OVERLAY_XATTR_PREFIXES`, imported here).
"""

from snapmux.adapters.overlay.lowers import OVERLAY_XATTR_PREFIXES

__all__ = ["META_PREFIX", "OPAQUE_MARKERS", "OPAQUE_XATTR", "OVERLAY_XATTR_PREFIXES", "PUBLISHED_MARKER",
           "USER_OPAQUE_XATTR", "WHITEOUT_PREFIX"]

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKERS = (".wh..wh..opq", ".wh..opq")
"""OCI's marker first (what a layer written by us uses)."""
META_PREFIX = ".wh..wh."
"""aufs bookkeeping (`.wh..wh.plnk`, ...): hidden, deletes nothing."""
OPAQUE_XATTR = "trusted.overlay.opaque"
USER_OPAQUE_XATTR = "user.overlay.opaque"
PUBLISHED_MARKER = "snapmux-layer.json"
"""Written by the publisher beside `layerfs`: the layer's whiteouts are overlayfs-native."""
