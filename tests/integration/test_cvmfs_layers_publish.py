"""`cvmfs-snapshotter publish` killed -9 in the middle of a layer: nothing half-written is ever
available, and the next run cleans up and finishes. The layer blob is a FIFO we feed by hand,
so the kill lands mid-extraction every time. And publishing from a registry that demands
bearer tokens (as every public one does), through a token gate in front of docker-registry."""

from __future__ import annotations

import asyncio
import base64
import glob
import json
import os
import subprocess

import pytest

from snapmux.adapters.cvmfs.layers import CvmfsLayerStore, parse_digest
from snapmux.entrypoints.cvmfs_snapshotter.publish import main as publish
from tests.integration.conftest import require_binaries
from tests.support.containerd import wait_until
from tests.support.images import whiteout_image
from tests.support.registry import Registry
from tests.support.token_gate import SERVICE, TokenGate

pytestmark = pytest.mark.integration


def kill_mid_layer(argv, fifo, first_half, scratch) -> int:
    """Feeds half the blob through the FIFO, waits until files land in the scratch dir, kills -9."""
    publisher = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        with open(fifo, "wb") as feed:
            feed.write(first_half)
            feed.flush()
            wait_until(lambda: glob.glob(scratch) != [], 30, "publisher extracting", lambda: publisher.poll() is None)
            publisher.kill()
            publisher.wait(timeout=30)
    except BrokenPipeError:
        pass
    finally:
        if publisher.poll() is None:
            publisher.kill()
        publisher.wait(timeout=30)
    return publisher.returncode


def test_kill_9_mid_layer_leaves_nothing_available_and_the_rerun_finishes(tmp_path):
    require_binaries("cvmfs-snapshotter")
    image = whiteout_image(str(tmp_path / "oci"))
    hex_digest = parse_digest(image.layers[0].digest)
    blob_path = os.path.join(image.layout, "blobs", "sha256", hex_digest)
    blob = open(blob_path, "rb").read()
    os.unlink(blob_path)
    os.mkfifo(blob_path)
    target = tmp_path / "layout"
    argv = ["cvmfs-snapshotter", "publish", "--jobs", "1", "--target", str(target), image.oci_ref]  # layer by layer
    scratch = str(target / ".layers" / hex_digest[:2] / f".tmp-{hex_digest}-*" / "layerfs" / "bin")
    returncode = kill_mid_layer(argv, blob_path, blob[: len(blob) // 2], scratch)
    store = CvmfsLayerStore(str(target))
    assert returncode == -9
    assert not store.check_now(hex_digest).exists and glob.glob(os.path.dirname(os.path.dirname(scratch)))

    os.unlink(blob_path)
    with open(blob_path, "wb") as out:
        out.write(blob)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "published 3 layer(s)" in done.stdout
    assert all(store.check_now(parse_digest(layer.digest)).published for layer in image.layers)
    assert glob.glob(str(target / ".layers" / "*" / ".tmp-*")) == []


@pytest.fixture
def registry(tmp_path):
    require_binaries("docker-registry", "skopeo")
    with Registry.start(tmp_path / "registry") as started:
        yield started


async def test_publishes_from_a_registry_that_wants_anonymous_bearer_tokens(registry, tmp_path):
    image = whiteout_image(str(tmp_path / "oci"))
    registry.push(image.layout, image.tag, "library/tokens:v1")
    layout = tmp_path / "layout"
    async with TokenGate.start(registry.host) as gate:
        argv = ["--plain-http", "--target", str(layout), f"{gate.host}/library/tokens:v1"]
        assert await asyncio.to_thread(publish, argv) == 0
    assert gate.challenged  # it did ask for a token
    assert gate.token_requests == [{"service": SERVICE, "scope": "repository:library/tokens:pull"}]  # once, reused
    store = CvmfsLayerStore(str(layout))
    for layer in image.layers:
        assert os.path.isdir(store.layer_path(parse_digest(layer.digest)))


async def test_a_refused_token_fails_the_publish_by_name_and_writes_nothing(registry, tmp_path, capsys):
    image = whiteout_image(str(tmp_path / "oci"))
    registry.push(image.layout, image.tag, "library/private:v1")
    layout = tmp_path / "layout"
    async with TokenGate.start(registry.host, refuse_tokens=True) as gate:
        argv = ["--plain-http", "--target", str(layout), f"{gate.host}/library/private:v1"]
        assert await asyncio.to_thread(publish, argv) == 1
    error = capsys.readouterr().err
    assert f"token service http://{gate.host}/token" in error and "refused a token: HTTP 403" in error
    assert not glob.glob(str(layout / ".layers" / "*" / "*" / "layerfs"))


async def test_publishes_a_private_image_with_the_credentials_of_an_auth_file(registry, tmp_path):
    image = whiteout_image(str(tmp_path / "oci"))
    registry.push(image.layout, image.tag, "team/private:v1")
    layout, authfile = tmp_path / "layout", tmp_path / "auth.json"
    async with TokenGate.start(registry.host, credentials=("builder", "s3cret:with-colon")) as gate:
        source = f"{gate.host}/team/private:v1"
        anonymous = ["--plain-http", "--authfile", "", "--target", str(layout), source]
        assert await asyncio.to_thread(publish, anonymous) == 1  # the token service wants credentials
        auth = base64.b64encode(b"builder:s3cret:with-colon").decode()
        authfile.write_text(json.dumps({"auths": {f"http://{gate.host}": {"auth": auth}}}))
        assert await asyncio.to_thread(publish, ["--plain-http", "--authfile", str(authfile), "--target",
                                                  str(layout), source]) == 0
    store = CvmfsLayerStore(str(layout))
    for layer in image.layers:
        assert os.path.isdir(store.layer_path(parse_digest(layer.digest)))
