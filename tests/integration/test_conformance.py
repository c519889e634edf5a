"""containerd's own snapshotter conformance suite against the installed cvmfs-snapshotter.

Every case must pass that passes for containerd's builtin overlayfs snapshotter
on this machine: `test_every_case_that_passes_for_builtin_overlayfs_passes`
runs containerd's own snapshots/overlay package tests (the same suite) as the
baseline. On this machine all of them pass there except `Rename`, which the
suite skips for every snapshotter; so the expectation is: no FAIL, and every
case but the suite's own skips ran.
"""

from __future__ import annotations

import os
import shutil

import pytest

from tests.support.conformance import (
    EXPECTED_CASES,
    SKIPPED_BY_THE_SUITE,
    ConformanceCases,
    builtin_overlay_run,
    go_available,
    run_conformance,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="the conformance suite mounts overlayfs: needs root"),
    pytest.mark.skipif(not go_available(), reason="go or the conformance build script is missing"),
    pytest.mark.skipif(shutil.which("cvmfs-snapshotter") is None, reason="cvmfs-snapshotter is not installed"),
]


@pytest.fixture(scope="session")
def conformance_run():
    return run_conformance("cvmfs-snapshotter --root {root} --address {socket} --log-level warning")


class TestCvmfsSnapshotter(ConformanceCases):
    """Every case ran, passed (but the suite's own skips), and the suite exited 0."""


def test_every_case_that_passes_for_builtin_overlayfs_passes(conformance_run):
    builtin = builtin_overlay_run()
    baseline = {name for name, case in builtin.cases.items() if case.outcome == "PASS"}
    assert baseline >= EXPECTED_CASES - SKIPPED_BY_THE_SUITE, builtin.output[-3000:]
    ours = {name for name, case in conformance_run.cases.items() if case.outcome == "PASS"}
    assert baseline & EXPECTED_CASES <= ours
