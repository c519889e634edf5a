"""Site publishing pieces without a registry: DUCC chain ids, recipes and tag lists (httpx mock
transport), NFS-style lock files and their staleness rule, chains, GC, platforms, isolation."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading

import httpx
import pytest

from snapmux.adapters.cvmfs import ducc
from snapmux.adapters.cvmfs.layers import parse_digest
from snapmux.adapters.cvmfs.locks import HOST, FileLock, LockWaitStopped
from snapmux.adapters.cvmfs.oci import _platform_manifest
from snapmux.adapters.cvmfs.publish_gc import collect
from snapmux.adapters.cvmfs.recipe import Wanted, list_tags, load_recipe, matching, parse_input
from snapmux.adapters.cvmfs.site_publish import SitePublisher, record_key
from snapmux.domain.errors import InvalidArgumentError, NotFoundError
from snapmux.entrypoints.cvmfs_snapshotter.publish import duration, main
from tests.support.containerd import wait_until
from tests.support.site_images import complete_entries, family

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="overlay whiteouts are char devices 0/0: needs root")
A, B = "sha256:" + "a" * 64, "sha256:" + "b" * 64


def test_chain_ids_are_ducc_s():
    second = hashlib.sha256(f"{'a' * 64} {'b' * 64}".encode()).hexdigest()  # cvmfs/ducc GenerateChainFromManifest
    assert ducc.chain_ids([A, B]) == [A, f"sha256:{second}"]
    assert ducc.chain_dir("/base", second) == f"/base/.chains/{second[:2]}/{second}"
    with pytest.raises(InvalidArgumentError):
        ducc.chain_ids(["sha256:../../etc"])


def test_recipe_inputs_map_schemes_and_docker_hub_and_refuse_bad_recipes(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("version: 1\ninput:\n  - 'https://registry.hub.docker.com/fedora:latest'\n"
                    "  - 'http://127.0.0.1:5000/app:1.*'\n  - 'ghcr.io/org/tool@sha256:" + "c" * 64 + "'\n")
    assert load_recipe(str(path)) == [Wanted("registry-1.docker.io/library/fedora:latest"),
                                      Wanted("127.0.0.1:5000/app:1.*", True),
                                      Wanted("ghcr.io/org/tool@sha256:" + "c" * 64)]
    assert parse_input("127.0.0.1:5000/app:1.*").repository == "127.0.0.1:5000/app"
    assert parse_input("127.0.0.1:5000/app:1.*").wildcard and not parse_input("127.0.0.1:5000/app").wildcard
    for text, key in (("version: 2\ninput: [a/b]\n", "'version'"), ("version: 1\n", "'input'"),
                      ("version: 1\ninput: [nohost]\n", "not host/repository"), ("- a\n", "mapping"),
                      ("version: 1\ninput: ['ftp://h/r']\n", "scheme")):
        path.write_text(text)
        with pytest.raises(InvalidArgumentError, match=key):
            load_recipe(str(path))


def test_tag_lists_follow_pages_and_refuse_garbage():
    pages = {"/v2/app/tags/list": (["1.0", "2.0"], '</v2/app/tags/list?last=2.0&n=2>; rel="next"'),
             "/v2/app/tags/list?last=2.0&n=2": (["1.1", "1.10"], "")}

    def answer(request):
        key = request.url.raw_path.decode().replace("?n=1000", "")
        tags, link = pages[key]
        return httpx.Response(200, json={"name": "app", "tags": tags}, headers={"Link": link} if link else {})

    client = httpx.Client(base_url="http://r/v2/", transport=httpx.MockTransport(answer))
    assert matching(list_tags(client, "app"), "1.*") == ["1.0", "1.1", "1.10"]
    garbage = httpx.Client(base_url="http://r/v2/", transport=httpx.MockTransport(
        lambda request: httpx.Response(200, content=b"<html>")))
    with pytest.raises(InvalidArgumentError, match="not JSON"):
        list_tags(garbage, "app")


def test_platforms_are_picked_from_an_index():
    index = {"manifests": [{"digest": "amd", "platform": {"os": "linux", "architecture": "amd64"}},
                           {"digest": "v7", "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
                           {"digest": "arm", "platform": {"os": "linux", "architecture": "arm64"}}]}
    assert _platform_manifest(index, "linux/arm64")["digest"] == "arm"
    assert _platform_manifest(index, "linux/arm/v7")["digest"] == "v7"
    with pytest.raises(NotFoundError, match="linux/s390x"):
        _platform_manifest(index, "linux/s390x")


def test_a_lock_is_exclusive_and_its_holder_is_written(tmp_path):
    first, second = FileLock(str(tmp_path / ".lock-x")), FileLock(str(tmp_path / ".lock-x"))
    assert first.try_acquire() and not second.try_acquire()
    holder = json.loads((tmp_path / ".lock-x").read_text())
    assert holder["host"] == HOST and holder["pid"] == os.getpid()
    first.release()
    assert second.try_acquire() and not os.path.exists(tmp_path / ".lock-y")


def test_a_dead_local_holder_is_stale_at_once_and_a_live_remote_one_only_after_stale_after(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    path = tmp_path / ".lock-x"
    path.write_text(json.dumps({"host": HOST, "pid": int(dead.stdout), "token": "t"}))
    assert FileLock(str(path)).try_acquire()  # kill -9 on this host: taken over
    path.write_text(json.dumps({"host": "other-node", "pid": 1, "token": "t"}))
    assert not FileLock(str(path), stale_after=60).try_acquire()  # another host, fresh: respected
    os.utime(path, (0, 0))
    assert FileLock(str(path), stale_after=60).try_acquire()  # another host, silent too long: stale


def test_the_heartbeat_keeps_a_held_lock_fresh_and_waiting_can_be_stopped(tmp_path):
    holder = FileLock(str(tmp_path / ".lock-x"), stale_after=0.4)
    assert holder.try_acquire()
    os.utime(tmp_path / ".lock-x", (0, 0))
    fresh = threading.Event()
    deadline = threading.Timer(30, fresh.set)
    deadline.start()
    while os.stat(tmp_path / ".lock-x").st_mtime == 0 and not fresh.is_set():
        fresh.wait(0.05)
    deadline.cancel()
    assert os.stat(tmp_path / ".lock-x").st_mtime > 0
    stop = threading.Event()
    stop.set()
    with pytest.raises(LockWaitStopped):
        FileLock(str(tmp_path / ".lock-x"), stale_after=3600).acquire(stop)
    holder.release()


def test_durations():
    assert [duration(text) for text in ("90", "30s", "10m", "1h", "7d")] == [90, 30, 600, 3600, 7 * 86400]


def test_no_image_and_no_recipe_is_a_usage_error(tmp_path, capsys):
    assert main(["--target", str(tmp_path)]) == 2
    assert "--recipe" in capsys.readouterr().err


@needs_root
def test_one_broken_image_fails_alone_and_the_exit_code_says_so(tmp_path, capsys):
    built = family(str(tmp_path / "images"), ["a:1", "b:1"])
    os.unlink(os.path.join(built["b:1"].layout, "blobs", "sha256", parse_digest(built["b:1"].layers[-1].digest)))
    target = tmp_path / "layout"
    assert main(["--target", str(target), built["a:1"].oci_ref, built["b:1"].oci_ref]) == 1
    captured = capsys.readouterr()
    assert f"publish failed: {built['b:1'].oci_ref} [" in captured.err and "]: No such file or directory" in captured.err
    assert f"ok {built['a:1'].oci_ref}" in captured.out
    assert parse_digest(built["a:1"].layers[-1].digest) in complete_entries(str(target), ".layers")


@needs_root
def test_a_stop_before_a_layer_starts_publishes_nothing_and_is_not_a_failure(tmp_path):
    built = family(str(tmp_path / "images"), ["a:1"])
    stop = threading.Event()
    stop.set()
    summary = SitePublisher(str(tmp_path / "layout"), stop=stop).run([Wanted(built["a:1"].oci_ref)])
    assert summary.stopped and not summary.failed
    assert complete_entries(str(tmp_path / "layout"), ".layers") == []


@needs_root
def test_gc_spares_what_a_publisher_holds_and_what_a_live_record_names(tmp_path):
    built = family(str(tmp_path / "images"), ["a:1", "b:1"])
    target = str(tmp_path / "layout")
    summary = SitePublisher(target).run([Wanted(image.oci_ref) for image in built.values()])
    assert not summary.failed
    b_top = parse_digest(built["b:1"].layers[-1].digest)
    busy = FileLock(os.path.join(target, ".layers", b_top[:2], ducc.LOCK_PREFIX + b_top))
    assert busy.try_acquire()  # a publisher is on it right now
    a_key = record_key(built["a:1"].oci_ref, summary.images[0].platform)
    report = collect(target, {a_key}, grace=0)
    busy.release()
    assert report.busy == 1 and b_top in complete_entries(target, ".layers")
    b_chain_top = parse_digest(ducc.chain_ids([x.digest for x in built["b:1"].layers])[-1])
    assert report.chains == [b_chain_top]
    assert collect(target, {a_key}, grace=0).layers == [b_top]  # once free, it goes
    assert complete_entries(target, ".layers") == sorted({parse_digest(x.digest) for x in built["a:1"].layers})


@needs_root
def test_a_registry_that_hangs_holds_up_only_its_own_inputs(tmp_path):
    built = family(str(tmp_path / "images"), ["a:1"])
    hanging = socket.socket()
    hanging.bind(("127.0.0.1", 0))
    hanging.listen(8)  # accepts connections (the kernel does) and never answers
    port = hanging.getsockname()[1]
    target = str(tmp_path / "layout")
    inputs = [Wanted(f"127.0.0.1:{port}/slow/app:*", True), Wanted(built["a:1"].oci_ref),
              Wanted(f"127.0.0.1:{port}/slow/app:*", True)]
    done: list = []
    runner = threading.Thread(target=lambda: done.append(SitePublisher(target, jobs=2).run(inputs)))
    runner.start()
    top = parse_digest(built["a:1"].layers[-1].digest)
    try:
        wait_until(lambda: top in complete_entries(target, ".layers"), 60, "the other image", runner.is_alive)
    finally:
        hanging.close()  # the pending tag lists fail now
        runner.join(120)
    summary = done[0]
    assert [image.reference for image in summary.images if not image.error] == [built["a:1"].oci_ref]
    assert len(summary.failed) == 2 and all("listing tags" in image.error for image in summary.failed)


def test_an_empty_lock_goes_stale_soon_and_an_orphan_of_this_process_at_once(tmp_path):
    path = tmp_path / ".lock-x"
    path.write_text("")  # killed between create and write
    assert not FileLock(str(path)).try_acquire()
    os.utime(path, (0, 0))
    assert FileLock(str(path)).try_acquire()
    path.write_text(json.dumps({"host": HOST, "pid": os.getpid(), "token": "nobody-holds-this"}))
    assert FileLock(str(path)).try_acquire()


def test_a_spooled_blob_longer_than_its_descriptor_is_cut_off_and_not_kept(tmp_path):
    from snapmux.adapters.cvmfs.blob_spool import ResumingOpener, part_path
    from snapmux.adapters.cvmfs.oci import RegistrySource

    source = RegistrySource("r.example/app:1", str(tmp_path), plain_http=True)
    source.client = httpx.Client(base_url="http://r.example/v2/", transport=httpx.MockTransport(
        lambda request: httpx.Response(200, content=b"x" * 5000)))
    opener = ResumingOpener(source, str(tmp_path), {A: 100})
    with pytest.raises(InvalidArgumentError, match="longer than its 100 bytes"):
        with opener(A):
            pass
    assert not os.path.exists(part_path(str(tmp_path), "a" * 64))
