"""Hostile image sources: digests that would be paths, malformed or huge documents, blobs that
never end. Each is refused with InvalidArgumentError before it costs memory, disk or a write
outside the target's `.layers/<xx>/<hex>`."""

from __future__ import annotations

import glob
import hashlib
import json
import os

import httpx
import pytest

from snapmux.adapters.cvmfs import ducc
from snapmux.adapters.cvmfs.layers import CvmfsLayerStore, parse_digest
from snapmux.adapters.cvmfs.oci import MAX_DOCUMENT, RegistrySource
from snapmux.adapters.cvmfs.registry_auth import MAX_TOKEN_ANSWER, RegistryAuth
from snapmux.domain.errors import InvalidArgumentError, UnavailableError
from snapmux.entrypoints.cvmfs_snapshotter.publish import main as publish_main
from tests.support.images import LAYER_GZIP, Descriptor, file, write_image, write_layer
from tests.support.publishing import publish_or_raise

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="publishing writes whiteouts: needs root")


def blob(layout, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    os.makedirs(os.path.join(layout, "blobs", "sha256"), exist_ok=True)
    with open(os.path.join(layout, "blobs", "sha256", digest), "wb") as out:
        out.write(data)
    return f"sha256:{digest}"


def tagged(layout, manifest: bytes | dict, size: int | None = None) -> str:
    data = manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode()
    entry = {"digest": blob(layout, data), "size": len(data) if size is None else size,
             "annotations": {"org.opencontainers.image.ref.name": "t"}}
    with open(os.path.join(layout, "index.json"), "w") as out:
        json.dump({"schemaVersion": 2, "manifests": [entry]}, out)
    return f"oci:{layout}:t"


def publish(tmp_path, reference: str):
    """Through the command's path (SitePublisher); raises what the image was refused with."""
    target = tmp_path / "out"
    publish_or_raise(target, reference)
    return target


def nothing_written(tmp_path):
    out = tmp_path / "out"
    assert glob.glob(str(out / ".layers" / "*" / "*")) == [] and glob.glob(str(out / ".layers" / "*" / ".tmp-*")) == []
    assert not os.path.exists(ducc.metadata_dir(str(out), ducc.MANIFESTS_DIR))
    assert sorted(os.listdir(tmp_path)) in (["oci"], ["oci", "out"])  # nothing beside the target either


@pytest.mark.parametrize("digest", ["sha256:../../../../../tmp/escape", "sha256:" + "A" * 64, "sha512:" + "a" * 128,
                                    "sha256:" + "a" * 64 + "\n", "sha256:" + "a" * 63, 42, None, ["sha256:x"]])
def test_a_layer_digest_that_is_not_sha256_hex_is_refused_before_it_names_a_path(tmp_path, digest):
    layout = str(tmp_path / "oci")
    good = write_layer(layout, [file("x", "x")])
    image = write_image(layout, "t", [good, Descriptor(LAYER_GZIP, digest, 10)], ["/x"])  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="layer digest"):
        publish(tmp_path, f"oci:{image.layout}:t")
    nothing_written(tmp_path)


@pytest.mark.parametrize("manifest, match", [
    (b"{not json", "is not JSON"),
    (b"[1, 2]", "not a JSON object"),
    ({"layers": "sha256:x", "config": {}}, "layers is not a list"),
    ({"layers": [{"digest": "sha256:" + "a" * 64}], "config": {}}, "layer 0 .* has no valid size"),
    ({"layers": [{"digest": "sha256:" + "a" * 64, "size": -1}], "config": {}}, "no valid size"),
    ({"layers": [{"digest": "sha256:" + "a" * 64, "size": True}], "config": {}}, "no valid size"),
    ({"layers": [], "config": "sha256:x"}, "config is not a descriptor"),
    ({"manifests": {"digest": "x"}}, "manifests is not a list"),
    ({"manifests": [{"digest": "sha256:../x", "size": 1}]}, "layer digest"),
], ids=["not-json", "array", "layers-string", "no-size", "negative-size", "bool-size", "config-string",
        "index-dict", "index-traversal"])
def test_malformed_manifests_and_indexes_are_refused_by_name(tmp_path, manifest, match):
    with pytest.raises(InvalidArgumentError, match=match):
        publish(tmp_path, tagged(str(tmp_path / "oci"), manifest))
    nothing_written(tmp_path)


def test_a_huge_manifest_is_refused_without_reading_it_all(tmp_path):
    huge = json.dumps({"layers": [], "config": {}, "pad": "x" * (MAX_DOCUMENT + 10)}).encode()
    with pytest.raises(InvalidArgumentError, match="larger than"):
        publish(tmp_path, tagged(str(tmp_path / "oci"), huge))
    nothing_written(tmp_path)


def test_a_huge_index_json_is_refused(tmp_path):
    layout = tmp_path / "oci"
    layout.mkdir()
    (layout / "index.json").write_text(json.dumps({"manifests": [], "pad": " " * MAX_DOCUMENT}))
    with pytest.raises(InvalidArgumentError, match="index.json is larger than"):
        publish(tmp_path, f"oci:{layout}:t")


def test_a_layer_blob_longer_than_its_descriptor_is_refused_and_not_published(tmp_path):
    layout = str(tmp_path / "oci")
    layer = write_layer(layout, [file("x", "x" * 10_000)], compress=False)
    short = Descriptor(LAYER_GZIP, layer.digest, layer.size - 512, layer.diff_id)
    image = write_image(layout, "t", [short], ["/x"])
    with pytest.raises(InvalidArgumentError, match="larger than its descriptor says"):
        publish(tmp_path, f"oci:{image.layout}:t")
    assert not CvmfsLayerStore(str(tmp_path / "out")).check_now(parse_digest(layer.digest)).exists


def test_a_layer_blob_that_never_ends_is_cut_off_at_its_size(tmp_path):
    layout = str(tmp_path / "oci")
    layer = write_layer(layout, [file("x", "x")])
    image = write_image(layout, "t", [layer], ["/x"])
    path = os.path.join(layout, "blobs", "sha256", parse_digest(layer.digest))
    os.unlink(path)
    os.symlink("/dev/zero", path)  # zeros: a tar that ends at once, then endless trailing data
    with pytest.raises(InvalidArgumentError, match="larger than its descriptor says"):
        publish(tmp_path, f"oci:{image.layout}:t")
    assert not CvmfsLayerStore(str(tmp_path / "out")).check_now(parse_digest(layer.digest)).exists


def endless(request: httpx.Request) -> httpx.Response:
    def forever():
        while True:
            yield b"{" * 65536
    return httpx.Response(200, content=forever())


@pytest.mark.parametrize("read", [
    lambda source: source.top_descriptor(),
    lambda source: source.read("sha256:" + "b" * 64),
    lambda source: source.open_blob("sha256:" + "c" * 64).__enter__(),
], ids=["manifest-by-tag", "config", "layer-of-unknown-size"])
def test_a_registry_that_never_stops_sending_is_cut_off(tmp_path, read):
    source = RegistrySource("registry.invalid/a/b:t", str(tmp_path / "spool"))
    source.client = httpx.Client(base_url="https://registry.invalid/v2/", transport=httpx.MockTransport(endless))
    with pytest.raises(InvalidArgumentError, match="larger than"):
        read(source)
    spool = tmp_path / "spool"
    assert not spool.exists() or os.listdir(spool) == []


# -- registries and token services are trusted with nothing but their own answers

class Gate:
    """A registry whose 401 names `realm`; records what reached the token service."""

    def __init__(self, realm: str, token_body=None) -> None:
        self.realm, self.token_body, self.token_requests = realm, token_body, []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/token":
            self.token_requests.append(request.headers.get("authorization"))
            return httpx.Response(200, content=(self.token_body or (lambda: iter([b'{"token": "t"}'])))())  # streamed
        if request.headers.get("authorization") == "Bearer t":
            return httpx.Response(200, content=b"{}")
        return httpx.Response(401, headers={"www-authenticate": f'Bearer realm="{self.realm}",service="s"'})


def client(gate, credentials=("user", "secret")):
    return httpx.Client(transport=httpx.MockTransport(gate), auth=RegistryAuth(credentials))


def test_credentials_never_go_to_a_plain_http_token_service_of_an_https_registry():
    gate = Gate("http://registry.example/token")
    with pytest.raises(UnavailableError, match="plain-http token service http://registry.example/token"):
        client(gate).get("https://registry.example/v2/a/manifests/t")
    assert gate.token_requests == []


def test_a_plain_http_registry_chosen_by_the_operator_may_use_a_plain_http_realm():
    gate = Gate("http://registry.example/token")
    assert client(gate).get("http://registry.example/v2/a/manifests/t").status_code == 200
    assert gate.token_requests == [RegistryAuth(("user", "secret"))._basic]


def test_anonymous_pulls_may_use_any_realm_the_registry_names():
    gate = Gate("http://registry.example/token")
    assert client(gate, None).get("https://registry.example/v2/a/manifests/t").status_code == 200
    assert gate.token_requests == [None]


def test_a_token_service_that_never_stops_sending_is_cut_off():
    def forever():
        while True:
            yield b" " * 65536

    gate = Gate("https://registry.example/token", token_body=forever)
    with pytest.raises(UnavailableError, match=f"answered more than {MAX_TOKEN_ANSWER} bytes"):
        client(gate).get("https://registry.example/v2/a/manifests/t")


# -- what a published layer exposes, and the operator's bounds

def test_published_layers_are_reachable_by_root_only(tmp_path):
    layout = str(tmp_path / "oci")
    layer = write_layer(layout, [file("su", "x", mode=0o4755)])
    target = publish(tmp_path, write_image(layout, "t", [layer], ["/su"]).oci_ref)
    layer_dir = CvmfsLayerStore(str(target)).layer_dir(parse_digest(layer.digest))
    assert os.stat(layer_dir).st_mode & 0o077 == 0 and os.stat(layer_dir).st_uid == 0
    assert os.stat(os.path.join(layer_dir, "layerfs", "su")).st_mode & 0o7777 == 0o4755


def test_the_operator_bounds_layer_size_and_entries_by_flag(tmp_path, capsys):
    layout = str(tmp_path / "oci")
    image = write_image(layout, "t", [write_layer(layout, [file("a", "x" * 1000), file("b", "y")])], ["/a"])
    target = str(tmp_path / "out")
    assert publish_main(["--max-layer-bytes", "1000", "--target", target, image.oci_ref]) == 1
    assert "layer unpacks to more than 1000 bytes of files" in capsys.readouterr().err
    assert publish_main(["--max-layer-entries", "1", "--target", target, image.oci_ref]) == 1
    assert "more than 1 entries" in capsys.readouterr().err
    nothing_written(tmp_path)
    assert publish_main(["--max-layer-bytes", "1001", "--target", target, image.oci_ref]) == 0
    with pytest.raises(SystemExit):
        publish_main(["--max-layer-bytes", "0", "--target", target, image.oci_ref])


def test_an_oci_archive_with_a_huge_header_is_refused_without_reading_it(tmp_path):
    from tests.support.hostile_tars import raw_header

    archive = tmp_path / "image.tar"
    archive.write_bytes(raw_header(b"pax", b"x", (8 << 30) - 1))
    with pytest.raises(InvalidArgumentError, match="extended header"):
        publish(tmp_path, f"oci-archive:{archive}:t")


@pytest.mark.parametrize("reference", [
    "registry.example/../../admin:t", "registry.example/a/./b", "registry.example/a:..", "registry.example/a:-x",
    "user:pass@evil.example/a:t", "registry.example/a?x=1:t", "registry.example/a#frag", "evil.example/a\n:t",
    "registry.example//a", "registry.example/a/", "registry.example/A",
])
def test_an_image_reference_that_could_bend_the_registry_url_is_refused(tmp_path, reference):
    with pytest.raises(InvalidArgumentError, match=r"is not \[host\[:port\]/\]repository"):
        RegistrySource(reference, str(tmp_path))


@pytest.mark.parametrize("reference, repo, ref", [
    ("registry-1.docker.io/library/busybox:1.36", "library/busybox", "1.36"),
    ("127.0.0.1:5000/team/app__x/y-z.w", "team/app__x/y-z.w", "latest"),
    ("[::1]:5000/a@sha256:" + "0" * 64, "a", "sha256:" + "0" * 64),
])
def test_ordinary_references_still_parse(tmp_path, reference, repo, ref):
    source = RegistrySource(reference, str(tmp_path))
    assert (source.repo, source.ref) == (repo, ref)
