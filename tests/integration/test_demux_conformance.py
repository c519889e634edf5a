"""containerd's snapshotter conformance suite through the demux, one microVM behind it.

The stack per case (tests/support/demux_stack.py): real http-address-resolver,
Firecracker vsock stand-in, cvmfs-snapshotter "in the VM", demux-snapshotter in
front. The suite's context namespace ("testsuite") reaches the demux as
`containerd-namespace` metadata through containerd's proxy client, so its
namespace-less keys are routed by the production rule, with no default namespace.
Expectation: exactly as for cvmfs-snapshotter alone (test_conformance.py).
"""

from __future__ import annotations

import os
import shutil
import sys

import pytest

from tests.support.conformance import REPO, ConformanceCases, go_available, run_conformance

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="the conformance suite mounts overlayfs: needs root"),
    pytest.mark.skipif(not go_available(), reason="go or the conformance build script is missing"),
    pytest.mark.skipif(
        not all(shutil.which(b) for b in ("cvmfs-snapshotter", "demux-snapshotter", "http-address-resolver")),
        reason="snapmux console scripts are not installed",
    ),
]

STACK = f"env PYTHONPATH={REPO} {sys.executable} -m tests.support.demux_stack --root {{root}} --socket {{socket}}"


@pytest.fixture(scope="module")
def conformance_run():
    return run_conformance(STACK)


class TestThroughTheDemux(ConformanceCases):
    """The same bar as cvmfs-snapshotter alone (test_conformance.py), through the whole stack."""
