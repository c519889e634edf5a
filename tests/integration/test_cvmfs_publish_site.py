"""Publishing a wishlist into a shared layout against the real docker-registry on loopback:
wildcards through the tag list, incremental re-runs, failure isolation, --loop, GC, chains,
and two publishers at once (blob GETs counted in the registry's access log)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import stat
import subprocess
import sys

import pytest

from snapmux.adapters.cvmfs import ducc
from snapmux.adapters.cvmfs.layers import parse_digest
from snapmux.adapters.cvmfs.site_publish import record_key
from snapmux.entrypoints.cvmfs_snapshotter.publish import main as publish
from tests.integration.conftest import require_binaries
from tests.support.containerd import wait_until
from tests.support.images import WHITEOUT_IMAGE_LAYERS, file, write_image, write_layer
from tests.support.registry import Registry
from tests.support.site_images import complete_entries, family, fingerprint

pytestmark = pytest.mark.integration
PLATFORM = "linux/amd64" if os.uname().machine == "x86_64" else "linux/arm64"


@pytest.fixture
def registry(tmp_path):
    require_binaries("docker-registry", "skopeo")
    with Registry.start(tmp_path / "registry") as started:
        yield started


def push_family(registry, tmp_path, names, **sizes):
    built = family(str(tmp_path / "images"), names, **sizes)
    for name, image in built.items():
        registry.push(image.layout, image.tag, name)
    return built


def recipe(tmp_path, inputs, name="recipe.yaml"):
    path = tmp_path / name
    path.write_text("version: 1\nuser: cvmfsunpacker\ncvmfs_repo: unpacked.cern.ch\n"
                    "output_format: '$(scheme)://registry.example/thin/$(image)'\ninput:\n"
                    + "".join(f"  - '{entry}'\n" for entry in inputs))
    return str(path)


def layers_of(*images):
    return sorted({parse_digest(layer.digest) for image in images for layer in image.layers})


def chains_of(*images):
    return sorted({parse_digest(chain) for image in images
                   for chain in ducc.chain_ids([layer.digest for layer in image.layers])})


def blob_gets(registry, since=0):
    return [path.rsplit("/", 1)[-1] for method, path, _ in registry.requests()[since:]
            if method == "GET" and "/blobs/sha256:" in path]


async def test_a_wildcard_recipe_publishes_the_matching_tags_and_a_rerun_downloads_nothing(registry, tmp_path, capsys,
                                                                                         caplog):
    built = push_family(registry, tmp_path, ["app:1.0", "app:1.1", "app:2.0", "other:latest"])
    target = tmp_path / "layout"
    wishlist = recipe(tmp_path, [f"http://{registry.host}/app:1.*", f"http://{registry.host}/other:latest"])
    argv = ["--target", str(target), "--recipe", wishlist, "--jobs", "3"]
    assert await asyncio.to_thread(publish, argv) == 0
    out = capsys.readouterr()
    wanted = [built["app:1.0"], built["app:1.1"], built["other:latest"]]
    assert complete_entries(str(target), ".layers") == layers_of(*wanted)  # not app:2.0's top layer
    assert complete_entries(str(target), ".chains") == chains_of(*wanted)
    assert f"ok {registry.host}/app:1.1 [{PLATFORM}]" in out.out and "app:2.0" not in out.out
    assert "ignoring user, cvmfs_repo, output_format" in caplog.text
    for name in ("app:1.0", "app:1.1", "other:latest"):
        record = json.loads((target / ".metadata" / "images" / f"{record_key(f'{registry.host}/{name}', PLATFORM)}.json"
                             ).read_text())
        assert record["complete"] and record["layers"] == [layer.digest for layer in built[name].layers]

    since = registry.mark()
    assert await asyncio.to_thread(publish, argv) == 0
    layer_blobs = {f"sha256:{hex_digest}" for hex_digest in layers_of(*wanted)}
    assert [digest for digest in blob_gets(registry, since) if digest in layer_blobs] == []  # configs: a few bytes
    assert "published 0 layer(s), skipped 12 already present" in capsys.readouterr().out
    assert caplog.text.count("ignoring user") == 1  # said once


async def test_a_chain_is_the_image_flattened_with_its_deletions_applied(registry, tmp_path):
    built = push_family(registry, tmp_path, ["app:1.0"])
    target = tmp_path / "layout"
    assert await asyncio.to_thread(publish, ["--plain-http", "--target", str(target), f"{registry.host}/app:1.0"]) == 0
    top = ducc.chain_dir(str(target), parse_digest(ducc.chain_ids([x.digest for x in built["app:1.0"].layers])[-1]))
    files = sorted(os.path.relpath(os.path.join(folder, name), top) for folder, _, names in os.walk(top)
                   for name in names if folder.startswith(os.path.join(top, "data")))
    assert files == ["data/dir/new.txt", "data/keep.txt", "data/middle-link.txt", "data/middle.txt", "data/top.txt"]
    assert open(os.path.join(top, "own", "name")).read() == "app:1.0"
    for folder, dirs, names in os.walk(top):
        for name in dirs + names:
            path = os.path.join(folder, name)
            assert not stat.S_ISCHR(os.lstat(path).st_mode), f"whiteout left in the chain: {path}"
            assert not [x for x in os.listxattr(path, follow_symlinks=False) if "overlay" in x]
    assert os.stat(os.path.join(top, "data", "middle.txt")).st_ino == \
        os.stat(os.path.join(top, "data", "middle-link.txt")).st_ino


async def test_one_bad_image_or_registry_does_not_stop_the_others(registry, tmp_path, capsys):
    built = push_family(registry, tmp_path, ["app:1.0"])
    target = tmp_path / "layout"
    wishlist = recipe(tmp_path, ["http://127.0.0.1:9/down:*", f"http://{registry.host}/missing:v1",
                                 f"http://{registry.host}/app:1.0", f"http://{registry.host}/app:9.*"])
    assert await asyncio.to_thread(publish, ["--target", str(target), "--recipe", wishlist]) == 1
    err = capsys.readouterr().err
    assert "publish failed: 127.0.0.1:9/down:*: listing tags: " in err
    assert f"publish failed: {registry.host}/missing:v1 [{PLATFORM}]: " in err
    assert f"publish failed: {registry.host}/app:9.*: no tag matches" in err
    assert complete_entries(str(target), ".layers") == layers_of(built["app:1.0"])


async def test_loop_picks_up_a_new_tag_and_sigterm_stops_it_cleanly(registry, tmp_path):
    push_family(registry, tmp_path / "first", ["app:1.0"])
    target = tmp_path / "layout"
    wishlist = recipe(tmp_path, [f"http://{registry.host}/app:*"])
    argv = [sys.executable, "-m", "snapmux.entrypoints.cvmfs_snapshotter.publish", "--target", str(target),
            "--recipe", wishlist, "--loop", "--interval", "1s"]
    looping = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def record(name):
            return target / ".metadata" / "images" / f"{record_key(f'{registry.host}/{name}', PLATFORM)}.json"

        await asyncio.to_thread(wait_until, record("app:1.0").exists, 120, "first pass", lambda: looping.poll() is None)
        new = await asyncio.to_thread(push_family, registry, tmp_path / "second", ["app:2.0"])
        await asyncio.to_thread(wait_until, lambda: record("app:2.0").exists() and json.loads(
            record("app:2.0").read_text())["complete"], 120, "the new tag", lambda: looping.poll() is None)
        looping.send_signal(signal.SIGTERM)
        out, err = await asyncio.to_thread(looping.communicate, timeout=120)
    finally:
        if looping.poll() is None:
            looping.kill()
            looping.wait()
    assert looping.returncode == 0, err
    assert "stopped by SIGTERM" in out
    assert set(layers_of(new["app:2.0"])) <= set(complete_entries(str(target), ".layers"))


async def test_gc_with_zero_grace_removes_exactly_what_no_recipe_image_references(registry, tmp_path, capsys):
    built = push_family(registry, tmp_path, ["app:1.0", "app:1.1", "other:latest"])
    target = tmp_path / "layout"
    everything = recipe(tmp_path, [f"http://{registry.host}/app:*", f"http://{registry.host}/other:latest"], "a.yaml")
    assert await asyncio.to_thread(publish, ["--target", str(target), "--recipe", everything]) == 0
    fewer = recipe(tmp_path, [f"http://{registry.host}/app:1.0"], "b.yaml")
    argv = ["--target", str(target), "--recipe", fewer, "--gc", "--gc-grace", "7d"]
    assert await asyncio.to_thread(publish, argv) == 0
    assert complete_entries(str(target), ".layers") == layers_of(*built.values())  # still within the grace
    assert await asyncio.to_thread(publish, [*argv[:-1], "0"]) == 0
    kept = built["app:1.0"]
    assert complete_entries(str(target), ".layers") == layers_of(kept)
    assert complete_entries(str(target), ".chains") == chains_of(kept)
    removed = len(layers_of(*built.values())) - len(layers_of(kept))
    assert f"gc: removed {removed} layer(s)" in capsys.readouterr().out
    assert [name for name in os.listdir(target / ".metadata" / "images")] == [
        f"{record_key(f'{registry.host}/app:1.0', PLATFORM)}.json"]
    leftovers = [name for root, dirs, names in os.walk(target) for name in dirs + names if name.startswith(".tmp-")]
    assert leftovers == []


def test_two_publishers_at_once_fetch_every_layer_exactly_once_and_agree_with_one(registry, tmp_path):
    built = push_family(registry, tmp_path, ["app:1.0", "app:1.1", "app:1.2"], shared_mb=8, own_mb=4)
    wishlist = recipe(tmp_path, [f"http://{registry.host}/app:1.*"])
    shared, alone = tmp_path / "shared", tmp_path / "alone"

    def argv(target):
        return [sys.executable, "-m", "snapmux.entrypoints.cvmfs_snapshotter.publish", "--target", str(target),
                "--recipe", wishlist, "--jobs", "2"]

    since = registry.mark()
    both = [subprocess.Popen(argv(shared), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    results = [publisher.communicate(timeout=300) for publisher in both]
    assert [publisher.returncode for publisher in both] == [0, 0], results
    fetched = blob_gets(registry, since)
    layer_blobs = {f"sha256:{hex_digest}" for hex_digest in layers_of(*built.values())}
    assert sorted(digest for digest in fetched if digest in layer_blobs) == sorted(layer_blobs)  # each once
    assert subprocess.run(argv(alone), capture_output=True, timeout=300).returncode == 0
    assert fingerprint(str(shared)) == fingerprint(str(alone))
    assert complete_entries(str(shared), ".chains") == chains_of(*built.values())


def push_multi_arch(registry, tmp_path):
    """An index of linux/amd64 and linux/arm64 manifests sharing a base, pushed with all platforms."""
    layout = str(tmp_path / "multi")
    base = [write_layer(layout, entries) for entries in WHITEOUT_IMAGE_LAYERS]
    tops = {arch: write_layer(layout, [file(f"etc/arch-{arch}", arch)]) for arch in ("amd64", "arm64")}
    manifests = {arch: write_image(layout, "v1", [*base, top], ["/bin/true"]).manifest for arch, top in tops.items()}
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
        {**manifests[arch].json(), "platform": {"os": "linux", "architecture": arch}} for arch in manifests]}
    with open(os.path.join(layout, "index.json"), "w") as out:
        json.dump({"schemaVersion": 2, "manifests": [{**_blob(layout, index), "annotations": {
            "org.opencontainers.image.ref.name": "multi"}}]}, out)
    subprocess.run(["skopeo", "copy", "--all", "--quiet", "--dest-tls-verify=false", f"oci:{layout}:multi",
                    f"docker://{registry.host}/multi:v1"], check=True, capture_output=True, timeout=300)
    return {arch: parse_digest(top.digest) for arch, top in tops.items()}


def _blob(layout, document):
    data = json.dumps(document).encode()
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(layout, "blobs", "sha256", digest), "wb") as out:
        out.write(data)
    return {"mediaType": document["mediaType"], "digest": f"sha256:{digest}", "size": len(data)}


async def test_platform_picks_manifests_from_a_multi_arch_index(registry, tmp_path):
    tops = push_multi_arch(registry, tmp_path)
    one, both = tmp_path / "one", tmp_path / "both"
    source = f"{registry.host}/multi:v1"
    assert await asyncio.to_thread(publish, ["--plain-http", "--platform", "linux/arm64", "--target", str(one),
                                             source]) == 0
    layers = complete_entries(str(one), ".layers")
    assert tops["arm64"] in layers and tops["amd64"] not in layers
    assert await asyncio.to_thread(publish, ["--plain-http", "--platform", "linux/amd64,linux/arm64", "--target",
                                             str(both), source]) == 0
    assert {tops["amd64"], tops["arm64"]} <= set(complete_entries(str(both), ".layers"))
    assert sorted(os.listdir(both / ".metadata" / "images")) == sorted(
        f"{record_key(source, platform)}.json" for platform in ("linux/amd64", "linux/arm64"))


async def test_a_download_cut_short_resumes_with_a_range_request(registry, tmp_path):
    built = push_family(registry, tmp_path, ["app:1.0"], own_mb=2)
    top = built["app:1.0"].layers[-1]
    blob = open(os.path.join(built["app:1.0"].layout, "blobs", "sha256", parse_digest(top.digest)), "rb").read()
    target = tmp_path / "layout"
    part = target / ".layers" / parse_digest(top.digest)[:2] / f".part-{parse_digest(top.digest)}"
    part.parent.mkdir(parents=True)
    part.write_bytes(blob[: len(blob) // 2])  # what a publisher killed mid-download leaves
    since = registry.mark()
    assert await asyncio.to_thread(publish, ["--plain-http", "--target", str(target), f"{registry.host}/app:1.0"]) == 0
    assert [status for method, path, status in registry.requests()[since:]
            if method == "GET" and path.endswith(top.digest)] == [206]
    assert parse_digest(top.digest) in complete_entries(str(target), ".layers") and not part.exists()

    corrupt = tmp_path / "corrupt"
    bad = corrupt / ".layers" / parse_digest(top.digest)[:2] / f".part-{parse_digest(top.digest)}"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"x" * len(blob))  # complete in size, wrong in content
    argv = ["--plain-http", "--target", str(corrupt), f"{registry.host}/app:1.0"]
    assert await asyncio.to_thread(publish, argv) == 1 and not bad.exists()  # refused, and not kept
    assert await asyncio.to_thread(publish, argv) == 0


def _publish_command(*args):
    command = os.path.join(os.path.dirname(sys.executable), "cvmfs-snapshotter")
    return subprocess.run([command, "publish", *args], capture_output=True, text=True, timeout=300)


def test_the_command_reports_progress_plainly_then_as_json_and_is_silent_when_quiet(registry, tmp_path):
    built = push_family(registry, tmp_path, ["app:1.0"], own_mb=3)["app:1.0"]
    reference = f"{registry.host}/app:1.0"
    plain = _publish_command("--target", str(tmp_path / "plain"), "--plain-http", reference)
    assert plain.returncode == 0, plain.stderr
    for layer in built.layers:  # bytes counted from the registry's chunks, as downloaded
        assert f"layer {layer.digest}: fetching {layer.size} bytes" in plain.stderr
        assert f"layer {layer.digest}: published, {layer.size} bytes in " in plain.stderr
    assert plain.stdout.startswith(f"ok {reference} [{PLATFORM}]")
    target = str(tmp_path / "layout")
    first = _publish_command("--json", "--target", target, "--plain-http", reference)
    assert first.returncode == 0, first.stderr
    assert first.stderr == ""
    summary = json.loads(first.stdout)
    [image] = summary["images"]
    assert (image["reference"], image["platform"], image["error"]) == (reference, PLATFORM, None)
    assert (image["published"], image["skipped"]) == (len(built.layers), 0)
    assert image["bytes"] == summary["totals"]["bytes"] == sum(layer.size for layer in built.layers)
    again = _publish_command("--quiet", "--target", target, "--plain-http", reference)
    assert (again.returncode, again.stdout, again.stderr) == (0, "", "")
    missing = _publish_command("--quiet", "--target", target, "--plain-http", f"{registry.host}/app:9.9")
    assert missing.returncode == 1 and missing.stdout == ""
    assert missing.stderr.startswith(f"publish failed: {registry.host}/app:9.9") and missing.stderr.count("\n") == 1
