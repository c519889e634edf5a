"""A site publisher killed -9 at random points, 20+ rounds on one target: after every kill, each
layer or chain that looks available (its final name exists) is complete, byte for byte what an
uninterrupted run writes; stale lock files of the dead publisher are taken over; the next run
completes the target. Kill points are drawn from a seeded RNG over the span of a full run."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import time

import pytest

from snapmux.adapters.cvmfs import ducc
from snapmux.adapters.cvmfs.layers import parse_digest
from tests.integration.conftest import require_binaries
from tests.support.registry import Registry
from tests.support.site_images import complete_entries, family, fingerprint

pytestmark = pytest.mark.integration
ROUNDS = 20
"""kill -9s that landed while the publisher ran"""


def run_argv(target, images, sources=None):
    return [sys.executable, "-m", "snapmux.entrypoints.cvmfs_snapshotter.publish", "--jobs", "3", "--plain-http",
            "--target", str(target), *(sources or [image.oci_ref for image in images])]


@pytest.fixture(params=["oci-layouts", "registry"])
def sources(request, tmp_path):
    """Kill points while reading local layouts, or while downloading (resumable part files)."""
    if request.param == "oci-layouts":
        yield None
        return
    require_binaries("docker-registry", "skopeo")
    with Registry.start(tmp_path / "registry") as registry:
        yield registry


def test_killed_at_random_points_nothing_incomplete_looks_available_and_the_next_run_completes(tmp_path, sources):
    built = family(str(tmp_path / "images"), ["app:1", "app:2", "app:3"], shared_mb=6, own_mb=3, extra_layers=3)
    images, names = list(built.values()), None
    if sources is not None:
        for name, image in built.items():
            sources.push(image.layout, image.tag, name)
        names = [f"{sources.host}/{name}" for name in built]
    reference = tmp_path / "reference"
    started = time.monotonic()
    subprocess.run(run_argv(reference, images, names), check=True, capture_output=True, timeout=300)
    span = time.monotonic() - started
    expected = fingerprint(str(reference))
    target, rng, killed_mid_way = tmp_path / "target", random.Random(1313), 0
    for _ in range(ROUNDS * 6):  # until ROUNDS kills landed (a run may finish before its kill point)
        if killed_mid_way >= ROUNDS:
            break
        publisher = subprocess.Popen(run_argv(target, images, names), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            publisher.wait(timeout=rng.uniform(0.1, 1.1) * span)
        except subprocess.TimeoutExpired:
            publisher.kill()
            killed_mid_way += 1
        publisher.wait(timeout=60)
        seen = fingerprint(str(target))
        assert {path: entry for path, entry in seen.items() if expected.get(path) != entry} == {}
        roots = {path.split("/")[0] + "/" + path.split("/")[1] for path in seen}
        for root in roots:  # an available entry is all of it, not a prefix
            assert {p for p in expected if p.startswith(root + "/") or p == root} == \
                {p for p in seen if p.startswith(root + "/") or p == root}
        if publisher.returncode == 0:
            _undo_some(target, rng)  # keep it interesting: the next round has work again
    assert killed_mid_way >= ROUNDS
    done = subprocess.run(run_argv(target, images, names), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert fingerprint(str(target)) == expected
    assert complete_entries(str(target), ".chains") == complete_entries(str(reference), ".chains")


def _undo_some(target, rng):
    """Drop half the finished entries (as GC would: rename aside, then delete), so that the next
    run has work enough for its kill point to land in it, however fast or slow the machine is."""
    for kind in (".layers", ".chains"):
        entries = complete_entries(str(target), kind)
        for name in rng.sample(entries, max(2, len(entries) // 2)):
            path = os.path.join(target, kind, name[:2], name)
            aside = os.path.join(os.path.dirname(path), f".gone-{name}")
            os.rename(path, aside)
            shutil.rmtree(aside)


def test_a_55_layer_image_s_chain_mounts_as_one_lower_directory_with_its_deletions_applied(tmp_path):
    """Not containerd (its chain reading is first-pull's work): a real overlay mount of the chain."""
    if os.geteuid() != 0:
        pytest.skip("needs root (mount)")
    image = family(str(tmp_path / "images"), ["tall:1"], extra_layers=51)["tall:1"]
    assert len(image.layers) == 55
    target = tmp_path / "target"
    subprocess.run(run_argv(target, [image]), check=True, capture_output=True, timeout=300)
    top = ducc.chain_dir(str(target), parse_digest(ducc.chain_ids([x.digest for x in image.layers])[-1]))
    upper, work, merged = (tmp_path / name for name in ("upper", "work", "merged"))
    for folder in (upper, work, merged):
        folder.mkdir()
    options = f"lowerdir={top},upperdir={upper},workdir={work}"
    subprocess.run(["mount", "-t", "overlay", "-o", options, "overlay", str(merged)], check=True)
    try:
        mounted = next(line for line in open("/proc/self/mountinfo") if f" {merged} " in line)
        assert f"lowerdir={top}," in mounted and ":" not in mounted.split("lowerdir=")[1].split(",")[0]
        files = sorted(os.path.relpath(os.path.join(folder, name), merged / "data")
                       for folder, _, names in os.walk(merged / "data") for name in names)
        assert files == ["dir/new.txt", "keep.txt", "middle-link.txt", "middle.txt", "top.txt"]
        assert (merged / "etc" / "extra-50").read_text() == "50\n" and (merged / "own" / "name").read_text() == "tall:1"
    finally:
        subprocess.run(["umount", str(merged)], check=True)
