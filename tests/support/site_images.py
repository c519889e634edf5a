"""Families of images sharing base layers (a site's wishlist), and a fingerprint of a layout.

`family(root, names, ...)` writes one OCI layout per name: the three whiteout layers (a delete
and an opaque directory on top of busybox), `shared_mb` of shared random data, then a top
layer of `own_mb` random data and a file naming the image. Same inputs, same digests.
`fingerprint(target)` is what a reader can see of `.layers` and `.chains` (types, modes,
owners, sizes, content hashes, xattrs), so two targets can be compared for identity.
"""

from __future__ import annotations

import hashlib
import os
import stat

from tests.support.images import (
    WHITEOUT_IMAGE_LAYERS,
    BuiltImage,
    directory,
    file,
    random_file,
    write_image,
    write_layer,
)


def family(root: str, names: list[str], shared_mb: float = 0, own_mb: float = 0, extra_layers: int = 0
           ) -> dict[str, BuiltImage]:
    built = {}
    for index, name in enumerate(names):
        layout = os.path.join(root, name.replace(":", "_").replace("/", "_"))
        layers = [write_layer(layout, entries) for entries in WHITEOUT_IMAGE_LAYERS]
        if shared_mb:
            layers.append(write_layer(layout, [directory("shared"), random_file("shared/blob", int(shared_mb * 2**20), 7)]))
        for extra in range(extra_layers):
            layers.append(write_layer(layout, [file(f"etc/extra-{extra}", f"{extra}\n")]))
        top = [directory("own"), file("own/name", name)]
        if own_mb:
            top.append(random_file("own/blob", int(own_mb * 2**20), 1000 + index))
        layers.append(write_layer(layout, top))
        built[name] = write_image(layout, "v1", layers, ["/bin/sh", "-c", "cat /own/name"])
    return built


def fingerprint(target: str, kinds: tuple[str, ...] = (".layers", ".chains")) -> dict[str, tuple]:
    """Everything visible under the complete (non-dot) entries of `kinds`."""
    found: dict[str, tuple] = {}
    for kind in kinds:
        root = os.path.join(target, kind)
        for prefix in sorted(os.listdir(root)) if os.path.isdir(root) else []:
            for name in sorted(os.listdir(os.path.join(root, prefix))):
                if not name.startswith("."):
                    _walk(os.path.join(root, prefix, name), f"{kind}/{name}", found)
    return found


def _walk(path: str, rel: str, found: dict[str, tuple]) -> None:
    info = os.lstat(path)
    xattrs = tuple(sorted((name, os.getxattr(path, name, follow_symlinks=False))
                          for name in os.listxattr(path, follow_symlinks=False)))
    if stat.S_ISREG(info.st_mode):
        with open(path, "rb") as handle:
            content = hashlib.sha256(handle.read()).hexdigest()
    elif stat.S_ISLNK(info.st_mode):
        content = os.readlink(path)
    else:
        content = info.st_rdev
    found[rel] = (stat.S_IFMT(info.st_mode), stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid, content, xattrs)
    if stat.S_ISDIR(info.st_mode):
        for name in sorted(os.listdir(path)):
            _walk(os.path.join(path, name), f"{rel}/{name}", found)


def complete_entries(target: str, kind: str) -> list[str]:
    root = os.path.join(target, kind)
    return sorted(name for prefix in (os.listdir(root) if os.path.isdir(root) else [])
                  for name in os.listdir(os.path.join(root, prefix)) if not name.startswith("."))
