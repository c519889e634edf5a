"""Build small OCI images (layout directories) for tests and benchmarks, without a daemon.

Layers are lists of entries written by tarfile, whiteouts spelled the OCI way
(`.wh.<name>`, `.wh..wh..opq`), so both containerd's unpacker and our publisher see
what a real registry would serve. The runnable base is /bin/busybox (busybox-static).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field

from snapmux.adapters.cvmfs.layer_compression import zstd
from snapmux.adapters.cvmfs.whiteout_names import OPAQUE_MARKERS, WHITEOUT_PREFIX

BUSYBOX = "/bin/busybox"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"


@dataclass(frozen=True)
class Entry:
    name: str
    type: bytes = tarfile.REGTYPE
    data: bytes = b""
    mode: int = 0o644
    linkname: str = ""
    random_size: int = 0
    seed: int = 0


def file(name: str, data: bytes | str = b"", mode: int = 0o644) -> Entry:
    return Entry(name, data=data.encode() if isinstance(data, str) else data, mode=mode)


def random_file(name: str, size: int, seed: int) -> Entry:
    """Incompressible content from a fixed seed: same bytes (and digests) on every run."""
    return Entry(name, random_size=size, seed=seed)


def directory(name: str, mode: int = 0o755) -> Entry:
    return Entry(name, tarfile.DIRTYPE, mode=mode)


def symlink(name: str, target: str) -> Entry:
    return Entry(name, tarfile.SYMTYPE, mode=0o777, linkname=target)


def hardlink(name: str, target: str) -> Entry:
    return Entry(name, tarfile.LNKTYPE, linkname=target)


def whiteout(name: str) -> Entry:
    head, _, base = name.rpartition("/")
    return file(f"{head}/{WHITEOUT_PREFIX}{base}" if head else f"{WHITEOUT_PREFIX}{base}")


def opaque(directory_name: str) -> Entry:
    return file(f"{directory_name.rstrip('/')}/{OPAQUE_MARKERS[0]}")


def busybox_base() -> list[Entry]:
    with open(BUSYBOX, "rb") as binary:
        data = binary.read()
    return [directory("bin"), file("bin/busybox", data, 0o755), symlink("bin/sh", "busybox"),
            *(symlink(f"bin/{tool}", "busybox") for tool in ("cat", "ls", "echo", "sha256sum", "find")),
            directory("etc"), directory("tmp", 0o1777)]


class _Hashing(io.RawIOBase):
    def __init__(self, target) -> None:
        self.target, self.hash, self.size = target, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.hash.update(data)
        self.size += len(data)
        return self.target.write(data)


def _random_stream(size: int, seed: int):
    rng, left = random.Random(seed), size
    while left:
        chunk = rng.randbytes(min(left, 1 << 20))
        left -= len(chunk)
        yield chunk


def _add(tar: tarfile.TarFile, entry: Entry) -> None:
    info = tarfile.TarInfo(entry.name)
    info.type, info.mode, info.linkname, info.mtime = entry.type, entry.mode, entry.linkname, 1_700_000_000
    if entry.type != tarfile.REGTYPE:
        tar.addfile(info)
    elif entry.random_size:
        info.size = entry.random_size
        with tempfile.TemporaryFile() as spool:
            for chunk in _random_stream(entry.random_size, entry.seed):
                spool.write(chunk)
            spool.seek(0)
            tar.addfile(info, spool)
    else:
        info.size = len(entry.data)
        tar.addfile(info, io.BytesIO(entry.data))


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    diff_id: str = ""

    def json(self) -> dict:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


def write_layer(layout: str, entries: Iterable[Entry], compress: bool | str = True) -> Descriptor:
    """`compress`: True (gzip), "zstd", or False (a plain tar)."""
    blobs = os.path.join(layout, "blobs", "sha256")
    os.makedirs(blobs, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=blobs, delete=False) as out:
        outer = _Hashing(out)
        zipped = _compressor(outer, compress)
        inner = _Hashing(zipped or outer)
        with tarfile.open(fileobj=inner, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for entry in entries:
                _add(tar, entry)
        if zipped:
            zipped.close()
    digest = outer.hash.hexdigest()
    os.rename(out.name, os.path.join(blobs, digest))
    media_type = LAYER_ZSTD if compress == "zstd" else LAYER_GZIP if compress else LAYER_TAR
    return Descriptor(media_type, f"sha256:{digest}", outer.size, f"sha256:{inner.hash.hexdigest()}")


def _compressor(outer: _Hashing, compress: bool | str):
    if compress == "zstd":
        return zstd.ZstdFile(outer, mode="w", level=3)
    return gzip.GzipFile(fileobj=outer, mode="wb", compresslevel=1, mtime=0) if compress else None


def _write_blob(layout: str, media_type: str, document: dict) -> Descriptor:
    data = json.dumps(document, sort_keys=True).encode()
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(layout, "blobs", "sha256", digest), "wb") as out:
        out.write(data)
    return Descriptor(media_type, f"sha256:{digest}", len(data))


@dataclass
class BuiltImage:
    layout: str
    tag: str
    layers: list[Descriptor] = field(default_factory=list)
    manifest: Descriptor | None = None

    @property
    def oci_ref(self) -> str:
        return f"oci:{self.layout}:{self.tag}"


def write_image(layout: str, tag: str, layers: list[Descriptor], cmd: list[str]) -> BuiltImage:
    """Config, manifest and index for `layers` (already in `layout`), tagged `tag`."""
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
    config = _write_blob(layout, "application/vnd.oci.image.config.v1+json", {
        "architecture": arch, "os": "linux", "config": {"Cmd": cmd, "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]}})
    manifest = _write_blob(layout, "application/vnd.oci.image.manifest.v1+json", {
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config.json(), "layers": [layer.json() for layer in layers]})
    index = {"schemaVersion": 2, "manifests": [
        {**manifest.json(), "annotations": {"org.opencontainers.image.ref.name": tag}}]}
    with open(os.path.join(layout, "index.json"), "w") as out:
        json.dump(index, out)
    with open(os.path.join(layout, "oci-layout"), "w") as out:
        json.dump({"imageLayoutVersion": "1.0.0"}, out)
    return BuiltImage(layout, tag, list(layers), manifest)


WHITEOUT_IMAGE_LAYERS: list[list[Entry]] = [
    [*busybox_base(), directory("data"), file("data/keep.txt", "kept from layer 1\n"),
     file("data/gone.txt", "deleted by layer 3\n"), directory("data/dir"), file("data/dir/old.txt", "old\n")],
    [file("data/middle.txt", "from layer 2\n"), hardlink("data/middle-link.txt", "data/middle.txt")],
    [whiteout("data/gone.txt"), opaque("data/dir"), file("data/dir/new.txt", "new\n"),
     file("data/top.txt", "from layer 3\n")],
]
"""Three layers; the top one deletes a file and replaces a directory of the lowest."""

WHITEOUT_IMAGE_LISTING = "/data/dir/new.txt /data/keep.txt /data/middle-link.txt /data/middle.txt /data/top.txt"
"""What `find /data -type f | sort` prints in a container of that image."""


def whiteout_image(layout: str, tag: str = "v1", compress: bool | str = True, variant: str = "") -> BuiltImage:
    """`variant` changes every layer (a file under /etc), so chain IDs differ from other variants."""
    if os.path.exists(layout):
        shutil.rmtree(layout)
    layers = [[*entries, file(f"etc/variant-{index}", variant)] if variant else entries
              for index, entries in enumerate(WHITEOUT_IMAGE_LAYERS)]
    descriptors = [write_layer(layout, entries, compress) for entries in layers]
    return write_image(layout, tag, descriptors, ["/bin/sh", "-c", "find /data -type f | sort"])


def random_image(layout: str, tag: str, total_mb: int, layer_count: int, seed: int = 42) -> BuiltImage:
    """busybox plus `layer_count` layers of incompressible files totalling about `total_mb`."""
    per_layer = total_mb * 1024 * 1024 // layer_count
    descriptors = [write_layer(layout, busybox_base())]
    for index in range(layer_count):
        entries = [directory(f"data{index}"), random_file(f"data{index}/blob", per_layer, seed + index)]
        descriptors.append(write_layer(layout, entries))
    return write_image(layout, tag, descriptors, ["/bin/sh", "-c", "ls /data0 >/dev/null && echo done"])


PAUSE_SECONDS = "2147483647"


def pause_image(layout: str, tag: str = "v1") -> BuiltImage:
    """A pod sandbox ("pause") image: its command blocks, since CRI gives the sandbox no stdin
    (a plain /bin/sh would exit at once and the pod would go NotReady)."""
    return write_image(layout, tag, [write_layer(layout, busybox_base())], ["/bin/busybox", "sleep", PAUSE_SECONDS])


def oci_archive(image: BuiltImage, archive: str) -> str:
    """The layout as a tar, which `ctr images import` reads."""
    subprocess.run(["tar", "-C", image.layout, "-cf", archive, "."], check=True)
    return archive


def store_foreign(image: BuiltImage, base: str) -> None:
    """Each layer unpacked with a plain `tar -x` into `<base>/.layers/xx/<hex>/layerfs` (its `.wh.`
    files kept as plain files, no marker), as the real unpacked.cern.ch layout holds layers."""
    for layer in image.layers:
        hex_digest = layer.digest.removeprefix("sha256:")
        layerfs = os.path.join(base, ".layers", hex_digest[:2], hex_digest, "layerfs")
        os.makedirs(layerfs)
        blob = os.path.join(image.layout, "blobs", "sha256", hex_digest)
        subprocess.run(["tar", "-x", "--numeric-owner", "-f", blob, "-C", layerfs], check=True)
