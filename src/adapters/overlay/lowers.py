"""The stack of lower directories under an overlay mount, kept short enough for any depth.

Parents are listed nearest first. A parent adopted with whiteout shadows is mounted as
`wh-upper:fs:wh-lower`; two such parents next to each other would put two trees of nothing
but whiteouts side by side (the child's `wh-lower`, the parent's `wh-upper`), so they are merged
into one, `<child>/wh-merged` (built once, beside the child's other entries): an image of n
scanned layers costs 2n+1 lower directories, not 3n, which keeps 200 such layers under
overlayfs's 500 (OVERLAYFS_MAX_STACK: a deeper stack is refused by name rather than left to fail
as the mount's bare EINVAL in containerd). A flattened chain (DUCC's `.chains`) holds its parents' files too: nothing
below it is mounted. Over any adopted layer, `<root>/snapshots/hide` (one 0/0 whiteout,
`.cvmfscatalog`) hides CVMFS's catalog markers, which DUCC leaves at the top of each layer.

The mount data must fit one page. containerd's mount code, when the options exceed a page,
chdirs to the lowerdirs' common parent directory and passes them relative to it; with a deep
stack the relative `snapshots/<id>/wh-upper` names alone overflow it. So a long stack names
short symlinks instead, as docker's overlay2 `l/` directory does: `<root>/l/<id base36><role>`
(role "" for fs, U, W, M; `H` for the hider), at most 5-6 characters each after containerd's
compaction. Symlinks and trees are built off the loop before a mount is returned, idempotently
(built aside, renamed into place); each is derived from its snapshot's id, so Cleanup can drop
those whose snapshot is gone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

from snapmux.adapters.overlay.sqlite_store import Link
from snapmux.domain.errors import FailedPreconditionError

CATALOG_MARKER = ".cvmfscatalog"
SHORT_FORM_AT = 3072
"""lowerdir option length from which short names are used (a page is 4096; room for the rest)."""
ROLES = {"fs": "", "wh-upper": "U", "wh-lower": "W", "wh-merged": "M"}
OVERLAYFS_MAX_STACK = 500
"""The kernel's OVL_MAX_STACK: the lower directories one overlay mount takes. containerd's unpacker
mounts each layer's parents to apply it, so no image of more layers can be pulled either."""
HIDER = "H"
HIDER_DIR = "hide"
"""Under `snapshots/` like every other lower (Cleanup leaves it alone)."""
OVERLAY_XATTR_PREFIXES = ("trusted.overlay.", "user.overlay.")
"""Every xattr overlayfs reads as an instruction (opacity, redirects, metacopy): `trusted.`, or
`user.` on a `userxattr` mount."""


@dataclass(frozen=True)
class Lower:
    """One lower directory: a snapshot's entry (`fs`, `wh-upper`, ...) or the hider (id None)."""

    snapshot_id: int | None
    role: str


def visible(chain: Sequence[Link]) -> list[Link]:
    """The parents whose directories are mounted: down to the first flattened one, included."""
    for index, link in enumerate(chain):
        if link.flat:
            return list(chain[: index + 1])
    return list(chain)


def merges(child: Link, parent: Link) -> bool:
    return bool(child.shadows and parent.shadows and not child.flat)


def stack(chain: Sequence[Link]) -> list[Lower]:
    """The lower directories for parents `chain` (nearest first), topmost first."""
    links = visible(chain)
    lowers = [Lower(None, HIDER)] if any(link.source for link in links) else []
    for index, link in enumerate(links):
        parent = links[index + 1] if index + 1 < len(links) else None
        if link.shadows and not (index > 0 and merges(links[index - 1], link)):
            lowers.append(Lower(link.id, "wh-upper"))
        lowers.append(Lower(link.id, "fs"))
        if link.shadows:
            lowers.append(Lower(link.id, "wh-merged" if parent is not None and merges(link, parent) else "wh-lower"))
    if len(lowers) > OVERLAYFS_MAX_STACK:
        raise FailedPreconditionError(
            f"parent chain of {len(chain)} snapshots needs {len(lowers)} lower directories; overlayfs stacks at"
            f" most {OVERLAYFS_MAX_STACK} (a flattened chain, DUCC's .chains, mounts as one)"
        )
    return lowers


def short_name(lower: Lower) -> str:
    if lower.snapshot_id is None:
        return HIDER
    return _base36(lower.snapshot_id) + ROLES[lower.role]


def _base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    text = ""
    while True:
        number, rest = divmod(number, 36)
        text = digits[rest] + text
        if not number:
            return text


def snapshot_id_of_short(name: str) -> int | None:
    """The snapshot id a short link belongs to; None for the hider or a foreign entry."""
    digits = name[:-1] if name[-1:] in ROLES.values() else name
    if not digits or any(char not in "0123456789abcdefghijklmnopqrstuvwxyz" for char in digits):
        return None
    return int(digits, 36)


class LowerPaths:
    """Absolute paths of lower directories under one root, long or short form."""

    def __init__(self, root: str, snapshots_dir: str) -> None:
        self.root = root
        self.snapshots_dir = snapshots_dir
        self.hider = os.path.join(snapshots_dir, HIDER_DIR)
        self.short_dir = os.path.join(root, "l")

    def long(self, lower: Lower) -> str:
        if lower.snapshot_id is None:
            return self.hider
        return os.path.join(self.snapshots_dir, str(lower.snapshot_id), lower.role)

    def short(self, lower: Lower) -> str:
        return os.path.join(self.short_dir, short_name(lower))

    def uses_short(self, lowers: Sequence[Lower]) -> bool:
        """Whether the long list would crowd the page (with upperdir, workdir and flags beside it)."""
        rest = 2 * len(self.snapshots_dir) + 128
        return sum(len(self.long(lower)) + 1 for lower in lowers) + rest > SHORT_FORM_AT

    def render(self, lowers: Sequence[Lower]) -> list[str]:
        if self.uses_short(lowers):
            return [self.short(lower) for lower in lowers]
        return [self.long(lower) for lower in lowers]

    def ensure(self, chain: Sequence[Link]) -> None:
        """Blocking: builds what `stack(chain)` names and does not exist yet (hider, merged
        trees, short links when they will be used)."""
        lowers = stack(chain)
        links = visible(chain)
        if lowers and lowers[0].snapshot_id is None and not os.path.isdir(self.hider):
            _build_aside(self.hider, _write_hider, staging=self.root)  # not in snapshots/: Cleanup's
        for child, parent in zip(links, links[1:]):
            target = self.long(Lower(child.id, "wh-merged"))
            if merges(child, parent) and not os.path.isdir(target):
                lower_tree, upper_tree = os.path.join(child.shadows, "lower"), os.path.join(parent.shadows, "upper")
                _build_aside(target, lambda tree: merge_whiteout_trees(upper_tree, lower_tree, tree))
        if self.uses_short(lowers):
            self._link_short(lowers)

    def _link_short(self, lowers: Sequence[Lower]) -> None:
        os.makedirs(self.short_dir, mode=0o700, exist_ok=True)
        for lower in lowers:
            target = os.path.relpath(self.long(lower), self.short_dir)
            with contextlib.suppress(FileExistsError):
                os.symlink(target, self.short(lower))

    def prune(self, owned: set[int]) -> None:
        """Blocking: drops the short links of snapshots that no longer exist."""
        try:
            names = os.listdir(self.short_dir)
        except FileNotFoundError:
            return
        for name in names:
            snapshot_id = snapshot_id_of_short(name)
            if snapshot_id is not None and snapshot_id not in owned:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(self.short_dir, name))


def _build_aside(target: str, write, staging: str = "") -> None:  # type: ignore[no-untyped-def]
    """`write(tree)` fills a staged directory, renamed to `target`; a concurrent builder's
    identical result may win the rename, ours is then discarded."""
    staged = tempfile.mkdtemp(prefix=".build-", dir=staging or os.path.dirname(target))
    try:
        tree = os.path.join(staged, "tree")
        os.mkdir(tree)
        write(tree)
        with contextlib.suppress(FileExistsError, OSError):
            os.rename(tree, target)
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def _write_hider(tree: str) -> None:
    os.chmod(tree, 0o755)
    _mknod_whiteout(os.path.join(tree, CATALOG_MARKER))


def _mknod_whiteout(path: str) -> None:
    os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(0, 0))


def merge_whiteout_trees(upper: str, lower: str, tree: str) -> None:
    """Blocking: `tree` = the parent's `upper` (whiteouts over its `.wh.` files, directories as
    the parent has them) with the child's `lower` (whiteouts and opaque directories for what the
    child deletes) applied on top. Both hold only directories and 0/0 whiteouts; the child's
    directories all exist in the child's own layer, mounted above, which gives them their looks."""
    _copy_tree(upper, tree, keep_attributes=True)
    _copy_tree(lower, tree, keep_attributes=False)


def _copy_tree(source: str, tree: str, keep_attributes: bool) -> None:
    for dirpath, dirnames, filenames in os.walk(source):
        relative = os.path.relpath(dirpath, source)
        target = os.path.normpath(os.path.join(tree, relative))
        if os.path.lexists(target) and not os.path.isdir(target):
            dirnames[:] = []
            continue  # deleted above by a whiteout already written here
        os.makedirs(target, exist_ok=True)
        _copy_overlay_xattrs(dirpath, target)
        if keep_attributes and relative != ".":
            st = os.lstat(dirpath)
            os.lchown(target, st.st_uid, st.st_gid)
            os.chmod(target, stat.S_IMODE(st.st_mode))
        for name in filenames:
            path = os.path.join(target, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            if not os.path.lexists(path):
                _mknod_whiteout(path)
    if keep_attributes:
        _copy_times(source, tree)


def _copy_overlay_xattrs(source: str, target: str) -> None:
    for name in os.listxattr(source, follow_symlinks=False):
        if name.startswith(OVERLAY_XATTR_PREFIXES):
            os.setxattr(target, name, os.getxattr(source, name, follow_symlinks=False), follow_symlinks=False)


def _copy_times(source: str, tree: str) -> None:
    """Deepest first, so setting a child's times never changes its parent's afterwards."""
    found = [dirpath for dirpath, _, _ in os.walk(source)]
    for dirpath in sorted(found, key=lambda path: path.count(os.sep), reverse=True):
        target = os.path.normpath(os.path.join(tree, os.path.relpath(dirpath, source)))
        if os.path.isdir(target) and not os.path.islink(target):
            st = os.lstat(dirpath)
            os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
