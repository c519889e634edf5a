"""The publisher (SitePublisher, the command's path): layout, whiteout conversion, idempotence,
interruption and leftovers (only a layer's own), hostile tars."""

from __future__ import annotations

import contextlib
import os
import stat
import tarfile

import pytest

from snapmux.adapters.cvmfs import ducc
from snapmux.adapters.cvmfs.layers import CvmfsLayerStore, parse_digest
from snapmux.adapters.cvmfs.locks import FileLock
from snapmux.adapters.cvmfs.oci import OciArchiveSource, OciLayoutSource
from snapmux.adapters.cvmfs.publish_gc import collect
from snapmux.adapters.cvmfs.whiteout_names import PUBLISHED_MARKER
from snapmux.domain.errors import InvalidArgumentError
from snapmux.entrypoints.cvmfs_snapshotter.publish import main
from tests.support import images
from tests.support.images import directory, file, hardlink, symlink, whiteout_image, write_image, write_layer
from tests.support.publishing import publish_or_raise
from tests.support.requirements import lacking_root, require


@pytest.fixture(autouse=True)
def _root():
    require(*lacking_root("overlay whiteouts are char devices 0/0 and trusted.* xattrs"))


@pytest.fixture
def image(tmp_path):
    return whiteout_image(str(tmp_path / "oci"))


def layerfs(target, descriptor):
    return CvmfsLayerStore(str(target)).layer_path(parse_digest(descriptor.digest))


def all_names(root):
    return {name for _, dirs, files in os.walk(root) for name in dirs + files}


def test_every_layer_lands_in_the_layout_with_its_marker(tmp_path, image):
    target = tmp_path / "layout"
    result = publish_or_raise(target, image.oci_ref)
    assert (result.published, result.skipped) == (len(image.layers), 0)
    store = CvmfsLayerStore(str(target))
    for layer in image.layers:
        assert store.check_now(parse_digest(layer.digest)).published
    assert os.path.isfile(f"{layerfs(target, image.layers[0])}/bin/busybox")
    assert os.path.isdir(ducc.metadata_dir(str(target), ducc.MANIFESTS_DIR, parse_digest(image.manifest.digest)))


def test_whiteouts_become_overlay_native(tmp_path, image):
    target = tmp_path / "layout"
    publish_or_raise(target, image.oci_ref)
    top = layerfs(target, image.layers[2])
    gone = os.lstat(f"{top}/data/gone.txt")
    assert stat.S_ISCHR(gone.st_mode) and gone.st_rdev == os.makedev(0, 0)
    assert os.getxattr(f"{top}/data/dir", "trusted.overlay.opaque") == b"y"
    assert os.path.isfile(f"{top}/data/dir/new.txt")
    assert not any(name.startswith(".wh.") for name in all_names(top))


def test_cern_style_opaque_marker_is_converted_too(tmp_path):
    layout = str(tmp_path / "oci")
    layer = write_layer(layout, [directory("d"), file("d/.wh..opq"), file("d/x", "x")])
    write_image(layout, "t", [layer], ["/bin/true"])
    publish_or_raise(tmp_path / "out", f"oci:{layout}:t")
    root = layerfs(tmp_path / "out", layer)
    assert os.getxattr(f"{root}/d", "trusted.overlay.opaque") == b"y"
    assert os.listdir(f"{root}/d") == ["x"]


def test_hard_links_inside_the_layer_share_the_inode(tmp_path, image):
    target = tmp_path / "layout"
    publish_or_raise(target, image.oci_ref)
    middle = layerfs(target, image.layers[1])
    assert os.stat(f"{middle}/data/middle.txt").st_ino == os.stat(f"{middle}/data/middle-link.txt").st_ino


def test_second_run_skips_everything_and_changes_nothing(tmp_path, image):
    target = tmp_path / "layout"
    publish_or_raise(target, image.oci_ref)
    before = {layer.digest: os.stat(layerfs(target, layer)).st_ino for layer in image.layers}
    result = publish_or_raise(target, image.oci_ref)
    assert (result.published, result.skipped) == (0, 3)
    assert before == {layer.digest: os.stat(layerfs(target, layer)).st_ino for layer in image.layers}


class Interrupted(Exception):
    pass


def test_interrupted_layer_never_appears_and_leaves_nothing(tmp_path, image, monkeypatch):
    target = tmp_path / "layout"
    open_blob = OciLayoutSource.open_blob

    @contextlib.contextmanager
    def dies_midway(self, digest):
        with open_blob(self, digest) as blob:
            class Reader:
                def read(self, size=-1):
                    raise Interrupted()
            yield Reader() if digest == image.layers[0].digest else blob

    monkeypatch.setattr(OciLayoutSource, "open_blob", dies_midway)
    with pytest.raises(Interrupted):
        publish_or_raise(target, image.oci_ref)
    store = CvmfsLayerStore(str(target))
    assert not os.path.lexists(store.layer_dir(parse_digest(image.layers[0].digest)))
    assert [n for n in all_names(target / ".layers") if n.startswith(".tmp-")] == []


def scratch(target, hex_digest, name, kind=".layers"):
    """What a publisher has (or had, if killed) half-written for `hex_digest`."""
    folder = target / kind / hex_digest[:2] / f".tmp-{hex_digest}-{name}" / "layerfs"
    folder.mkdir(parents=True)
    (folder / "half").write_text("half")
    return folder


def test_leftovers_of_a_killed_run_are_removed_and_the_layer_published(tmp_path, image):
    target = tmp_path / "layout"
    hex_digest = parse_digest(image.layers[0].digest)
    leftover = scratch(target, hex_digest, "killed")
    publish_or_raise(target, image.oci_ref)
    assert not leftover.exists()
    assert CvmfsLayerStore(str(target)).check_now(hex_digest).published


def test_another_publishers_scratch_survives_publishing_and_gc_beside_it(tmp_path, image):
    """A live publisher of another layer in the same `.layers/<xx>/` (and in another folder),
    and of another chain beside this image's, keeps its scratch through a whole publish and a
    collection: cleanup is per entry, under that entry's lock, never a sweep of every `.tmp-*`."""
    target = tmp_path / "layout"
    beside = parse_digest(image.layers[0].digest)[:2] + "f" * 62
    elsewhere = ("0" if beside[0] != "0" else "1") + "e" * 63
    chain_beside = parse_digest(ducc.chain_ids([layer.digest for layer in image.layers])[-1])[:2] + "d" * 62
    busy = [(".layers", beside), (".layers", elsewhere), (".chains", chain_beside)]
    theirs = [scratch(target, other, "live", kind) for kind, other in busy]
    locks = [FileLock(str(target / kind / other[:2] / f"{ducc.LOCK_PREFIX}{other}")) for kind, other in busy]
    assert all(lock.try_acquire() for lock in locks)  # the other publisher is on them right now
    try:
        result = publish_or_raise(target, image.oci_ref)
        collect(str(target), set(), grace=0)
        assert all((folder / "half").read_text() == "half" for folder in theirs)
    finally:
        for lock in locks:
            lock.release()
    assert (result.published, result.chains) == (len(image.layers), len(image.layers))


def test_digest_mismatch_is_refused(tmp_path, image):
    blob = os.path.join(image.layout, "blobs", "sha256", parse_digest(image.layers[1].digest))
    other = os.path.join(image.layout, "blobs", "sha256", parse_digest(image.layers[2].digest))
    os.replace(other, blob)
    with pytest.raises(InvalidArgumentError):
        publish_or_raise(tmp_path / "out", image.oci_ref)
    assert not CvmfsLayerStore(str(tmp_path / "out")).check_now(parse_digest(image.layers[1].digest)).exists


def hostile_layer(tmp_path, name, *entries):
    layout = str(tmp_path / name)
    layer = write_layer(layout, entries)
    write_image(layout, "t", [layer], ["/bin/true"])
    return layout, layer


@pytest.mark.parametrize("entries", [
    [file("../escape", "x")],
    [file("/abs-escape", "x")],
    [file("a/../../escape", "x")],
    [symlink("link", str("/tmp")), file("link/escape", "x")],
    [directory("d"), symlink("d/up", ".."), file("d/up/../escape", "x")],
    [hardlink("h", "../../etc/passwd")],
    [symlink("link", "/etc"), hardlink("h", "link/passwd")],
], ids=["dotdot", "absolute", "nested-dotdot", "symlink-parent", "symlink-dotdot", "hardlink-out", "hardlink-via-symlink"])
def test_entries_escaping_the_root_are_refused(tmp_path, entries):
    layout, layer = hostile_layer(tmp_path, "hostile", *entries)
    target = tmp_path / "out"
    with pytest.raises(InvalidArgumentError):
        publish_or_raise(target, f"oci:{layout}:t")
    assert not CvmfsLayerStore(str(target)).check_now(parse_digest(layer.digest)).exists
    assert not os.path.exists("/tmp/escape") and not (tmp_path / "escape").exists()
    assert [n for n in all_names(target) if n.startswith(".tmp-")] == []


def test_uncompressed_layers_and_oci_archives(tmp_path):
    image = whiteout_image(str(tmp_path / "oci"), compress=False)
    archive = tmp_path / "image.tar"
    with tarfile.open(archive, "w") as tar:
        for name in sorted(os.listdir(image.layout)):
            tar.add(os.path.join(image.layout, name), arcname=name)
    result = publish_or_raise(tmp_path / "out", f"oci-archive:{archive}:v1")
    assert result.published == 3
    assert os.path.isfile(f"{layerfs(tmp_path / 'out', image.layers[1])}/data/middle.txt")


def test_cli_publishes_and_reports_failures(tmp_path, image, capsys):
    assert main(["--target", str(tmp_path / "out"), image.oci_ref]) == 0
    assert "published 3 layer(s)" in capsys.readouterr().out
    assert main(["--target", str(tmp_path / "out"), image.oci_ref]) == 0
    assert "skipped 3" in capsys.readouterr().out
    assert main(["--target", str(tmp_path / "out"), f"oci:{image.layout}:no-such-tag"]) == 1
    assert "no-such-tag" in capsys.readouterr().err


def test_marker_sits_beside_layerfs(tmp_path, image):
    publish_or_raise(tmp_path / "out", image.oci_ref)
    layer_dir = CvmfsLayerStore(str(tmp_path / "out")).layer_dir(parse_digest(image.layers[0].digest))
    assert sorted(os.listdir(layer_dir)) == ["layerfs", PUBLISHED_MARKER]
    assert images.WHITEOUT_IMAGE_LISTING


def test_image_specs_name_their_source(tmp_path):
    from snapmux.adapters.cvmfs.oci import RegistrySource, open_source

    assert isinstance(open_source("oci:/x:tag", str(tmp_path)), OciLayoutSource)
    assert open_source("oci:/x:tag", str(tmp_path)).tag == "tag"
    assert isinstance(open_source("oci-archive:/x.tar", str(tmp_path)), OciArchiveSource)
    registry = open_source("docker://127.0.0.1:5000/a/b:v2", str(tmp_path), plain_http=True)
    assert isinstance(registry, RegistrySource) and (registry.repo, registry.ref) == ("a/b", "v2")
    assert str(registry.client.base_url) == "http://127.0.0.1:5000/v2/"
    assert open_source("127.0.0.1:5000/a", str(tmp_path)).ref == "latest"
    assert open_source("no-host", str(tmp_path)).repo == "library/no-host"  # on Docker Hub, as docker says
    for bad in ("No-host", "127.0.0.1:5000/Upper:tag", "127.0.0.1:5000/a:b@sha256:xyz"):
        with pytest.raises(InvalidArgumentError):
            open_source(bad, str(tmp_path))


def test_an_image_index_resolves_to_this_platform(tmp_path, image):
    import hashlib
    import json as jsonlib

    from tests.support.images import write_layer as other_layer

    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
    native = jsonlib.load(open(os.path.join(image.layout, "index.json")))["manifests"][0]
    foreign = write_image(image.layout, "foreign", [other_layer(image.layout, [file("x", "x")])], ["/x"]).manifest
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
        {**foreign.json(), "platform": {"os": "linux", "architecture": "not-" + arch}},
        {**{k: native[k] for k in ("mediaType", "digest", "size")}, "platform": {"os": "linux", "architecture": arch}}]}
    data = jsonlib.dumps(index).encode()
    digest = hashlib.sha256(data).hexdigest()
    (tmp_path / "oci" / "blobs" / "sha256" / digest).write_bytes(data)
    with open(os.path.join(image.layout, "index.json"), "w") as out:
        jsonlib.dump({"schemaVersion": 2, "manifests": [{"mediaType": index["mediaType"], "digest": f"sha256:{digest}",
                      "size": len(data), "annotations": {"org.opencontainers.image.ref.name": "multi"}}]}, out)
    resolved = OciLayoutSource(image.layout, "multi").image()
    assert resolved.manifest_digest == native["digest"]
    assert resolved.layers == [layer.digest for layer in image.layers]
