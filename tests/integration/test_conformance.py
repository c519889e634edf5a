"""containerd's own snapshotter conformance suite against the installed cvmfs-snapshotter.

The suite runs through the project's harness (tests/conformance/), registered as "overlayfs".
Every case must pass that passes for containerd's builtin overlayfs snapshotter on this
machine: `builtin_run` runs containerd's own snapshots/overlay package tests (the same suite)
as the baseline, and the harness must skip exactly what that baseline skips. On this machine
all of them pass there except `Rename`, which the suite skips; so the expectation is: no FAIL,
and every case but the suite's own skips ran and passed.
"""

from __future__ import annotations

import pytest

from tests.support.conformance import (
    EXPECTED_CASES,
    SKIPPED_BY_THE_SUITE,
    ConformanceCases,
    builtin_overlay_run,
    run_conformance,
)

pytestmark = pytest.mark.integration

COMMAND = "cvmfs-snapshotter --root {root} --address {socket} --log-level warning"


@pytest.fixture(scope="module")
def conformance_run():
    """Skips (fails, in CI) naming what is missing: root, cvmfs-snapshotter, go, containerd's Go sources."""
    return run_conformance("cvmfs-snapshotter", COMMAND, ("cvmfs-snapshotter",))


@pytest.fixture(scope="module")
def builtin_run():
    return builtin_overlay_run()


class TestCvmfsSnapshotter(ConformanceCases):
    """Every case ran, passed (but the suite's own skips), and the suite exited 0."""


def test_every_case_that_passes_for_builtin_overlayfs_passes(conformance_run, builtin_run):
    baseline = {name for name, case in builtin_run.cases.items() if case.outcome == "PASS"}
    assert baseline >= EXPECTED_CASES - SKIPPED_BY_THE_SUITE, builtin_run.output[-3000:]
    ours = {name for name, case in conformance_run.cases.items() if case.outcome == "PASS"}
    assert baseline & EXPECTED_CASES <= ours


def test_skips_as_for_builtin_overlayfs(conformance_run, builtin_run):
    """Registered as "overlayfs", the harness gets exactly the skips containerd's own overlayfs gets."""
    assert set(builtin_run.named("SKIP")) == SKIPPED_BY_THE_SUITE, builtin_run.output[-3000:]
    assert conformance_run.named("SKIP") == builtin_run.named("SKIP")
